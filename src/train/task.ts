/**
 * What a training run trains, seen from the loop in trainer.ts: its components (checkpointed and
 * exported each in its own folder), the loss over one batch, the batch of a given step, preview
 * images, and the exported pipeline. Two tasks exist: a denoiser on images (pixel-task.ts: MNIST,
 * image folders; class labels or none) and text to image in latent space (text-task.ts: a U-Net and
 * its text encoder trained jointly on the latents of a frozen VAE).
 */
import type { InputSpec } from "../runtime/compile.ts";
import type { HostTensor } from "../tensor/host.ts";
import type { LoraPlan, Params } from "../tensor/params.ts";
import type { TrainComponent } from "./checkpoint.ts";
import type { LossFn } from "./train-step.ts";

/** A preview grid's images and how to lay them out and label them. */
export interface PreviewImages {
  /** [N, C, H, W] in [0, 1]. */
  images: HostTensor<"float32">;
  nrow: number;
  /** The grid's `parameters` text (pipelines/options.ts parametersText). */
  parameters: string;
}

export interface TrainTask {
  readonly components: readonly TrainComponent[];
  readonly loss: LossFn;
  readonly batchSpecs: Readonly<Record<string, InputSpec>>;
  /** Images (or latents) per step. */
  readonly batchSize: number;
  /**
   * The graph feeds of step k (a pure function of k and the run's seed: resumes draw the same); a
   * promise where making them runs a model (a ControlNet run's re-laid-out images through the VAE).
   */
  batch(k: number): Record<string, HostTensor> | Promise<Record<string, HostTensor>>;
  /** Samples from the given weights (the EMA's when kept) for a preview grid at `step`. */
  preview(params: ReadonlyMap<string, HostTensor<"float32">>, step: number): Promise<PreviewImages>;
  /** Writes the trained model as a pipeline folder. */
  exportPipeline(
    params: ReadonlyMap<string, HostTensor<"float32">>,
    step: number,
    dir: string,
  ): Promise<void>;
  /** What the `start` event reports about the data. */
  readonly description: string;
  /**
   * The trainable parameters' starting values (prefixed names), when they do not start from their
   * initialisers: a fine-tune starts from the base's weights.
   */
  readonly initial?: Params;
  /** Weights the loss uses but the run does not train (a fine-tune's base). */
  readonly frozen?: Params;
  /** How the frozen weights enter the step: constants (default) or inputs fed each step (less memory). */
  readonly frozenAs?: "constants" | "inputs";
  /** LoRA adapters on the model's layers (their A and B are among the components' parameters). */
  readonly lora?: LoraPlan;
}
