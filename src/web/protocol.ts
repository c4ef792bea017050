/**
 * What the studio's server and its sampling worker say to each other. The server sends jobs and
 * cancellations over a named BroadcastChannel (runInWorker's context only carries messages out of
 * the worker); the worker answers through the context's `post`. Images cross as PNG bytes, encoded
 * in the worker so the server's thread only forwards them.
 */

import type { SamplingOptions } from "../pipelines/options.ts";
import type { JobEstimate } from "./job-cost.ts";

/** A validated generation request (its sampling options checked by the one schema), resolved against a model folder. */
export interface SampleSpec extends SamplingOptions {
  /** The model folder and a stamp of its files (a training run re-exports its model: a new stamp reloads it). */
  dir: string;
  stamp: string;
  /** One label per image, or null for an unconditional or text-to-image model (then `count` images). */
  labels: number[] | null;
  /** One prompt per image for a text-to-image model, else null. */
  prompts: string[] | null;
  /** The negative prompt of every image, or null for the empty prompt (plain classifier-free guidance). */
  negativePrompt: string | null;
  count: number;
  numClasses: number | null;
  size: number;
  /** Images per grid row. */
  nrow: number;
  /** Written into the PNG's `parameters` text chunk. */
  parameters: string;
  /** A control image [3, size, size] in [0, 1] (for every image) for a model with a ControlNet, else null. */
  control: { image: Float32Array; scale: number; guessMode: boolean } | null;
  /** LoRA files to apply (each as an adapter named by its id, at its scale), in order; a stamp of each file's version. */
  loras: { name: string; path: string; scale: number; stamp: string }[];
}

export type ToWorker =
  /** A job, with its estimated memory (the worker's graph cache makes room for it). */
  | { kind: "job"; id: string; spec: SampleSpec; estimate: JobEstimate | null }
  | { kind: "cancel"; id: string }
  | { kind: "stop" };

export type FromWorker =
  | { kind: "ready" }
  | { kind: "start"; id: string }
  | {
      kind: "step";
      id: string;
      /** 0-based step index and the number of steps. */
      i: number;
      steps: number;
      t: number;
      /** PNG grids of the current sample x_t and of the model's clean-image estimate x̂0 (a latent model's decoded by its VAE). */
      x: Uint8Array;
      x0: Uint8Array;
    }
  | { kind: "done"; id: string; png: Uint8Array; apng: Uint8Array; ms: number }
  | { kind: "failed"; id: string; message: string; cancelled: boolean };
