/**
 * The student of an LCM run (train/lcm.ts) as its tasks see it (distill-trainer.ts for a pixel
 * teacher, lcm-text.ts for a text-to-image one): what the train step trains and where it starts, the
 * loss, the feeds that read the train state (the target network θ⁻), the EMA decay of step k, and the
 * denoiser weights that the state's parameters stand for (previews, the exported model).
 *
 * - full (config `lora` null): the student is a copy of the teacher, every weight trained; the
 *   teacher's weights are constants of the step, the target's fed as inputs `target.<name>`.
 * - LCM-LoRA (config `lora`: lcm-lora.ts): the teacher's weights frozen, rank-r adapters trained; the
 *   exported model is the teacher with the adapters fused in, and the adapters are also written as
 *   diffusers' LoRA file beside it.
 */
import type { LoadedPipeline } from "../pipelines/pipeline-dir.ts";
import type { HostTensor } from "../tensor/host.ts";
import type { Params } from "../tensor/params.ts";
import { denoiserComponent } from "./checkpoint.ts";
import { emaDecayAt, type TrainConfig } from "./config.ts";
import type { DistillConfig } from "./distill-config.ts";
import type { LcmPlan } from "./lcm.ts";
import { loraStudent } from "./lcm-lora.ts";
import { lcmLoss, targetFeeds } from "./lcm-loss.ts";
import type { TrainTask } from "./task.ts";
import type { TrainState } from "./train-step.ts";

/** A student before the EMA decay is added (what lcm-lora.ts makes). */
export interface LcmStudentParts {
  /**
   * What the train step trains: the components, the loss, where the parameters start (copied by the
   * loop), and for LoRA the frozen base, how it is fed and the adapter plan.
   */
  readonly train: Pick<TrainTask, "components" | "loss" | "frozen" | "frozenAs" | "lora"> & {
    readonly initial: Params;
  };
  /** The feeds of a step that read the train state: the target network's weights. */
  stateFeeds(state: TrainState): Record<string, HostTensor>;
  /** The denoiser's weights for parameters of the train state (previews and the export). */
  weights(params: ReadonlyMap<string, HostTensor<"float32">>): Params;
  /** Writes what the run exports beside model/ (LCM-LoRA: pytorch_lora_weights.safetensors). */
  exportBeside?(params: ReadonlyMap<string, HostTensor<"float32">>): void;
  /** The student's settings in the exported model's provenance (`distilledFrom`). */
  readonly how: Readonly<Record<string, unknown>>;
  /** What is trained, for the start event. */
  readonly description: string;
}

export interface LcmStudent extends LcmStudentParts {
  /** The EMA decay of step k: constant μ with an EMA target, diffusers' warm-up with an online one. */
  emaDecay(k: number): number;
}

/** The student a config asks for: the whole teacher, or (config `lora`) adapters on it. */
export function lcmStudent(
  c: DistillConfig,
  plan: LcmPlan,
  teacher: LoadedPipeline,
  view: TrainConfig,
  runDir: string,
): LcmStudent {
  const online = c.lcm.target === "online";
  const base = teacher.denoiser.params;
  const parts: LcmStudentParts = c.lora
    ? loraStudent(plan, base, c.lora, { online, seed: c.training.seed, runDir })
    : {
        train: { components: [denoiserComponent(view)], loss: lcmLoss(plan, base), initial: base },
        stateFeeds: (state) => targetFeeds(online ? state.params : state.ema!),
        weights: (params) => new Map(params),
        how: {},
        description: "every weight",
      };
  return {
    ...parts,
    emaDecay: (k) => (online ? emaDecayAt(c.lcm.ema_decay, k) : c.lcm.ema_decay),
  };
}
