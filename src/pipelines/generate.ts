/**
 * Class-conditional generation: a U-Net, a scheduler and classifier-free guidance (Ho & Salimans
 * 2022) with ONE batched forward of [unconditional | conditional] per step. Images come back in
 * [0, 1]; `onStep` sees every step's x_t and x̂0 (for live previews).
 */

import { guidedNetwork } from "../diffusion/guidance.ts";
import type { Network } from "../diffusion/parameterization.ts";
import type { UNet2DModel } from "../models/unet/model.ts";
import type { Scheduler } from "../samplers/scheduler.ts";
import { HostTensor } from "../tensor/host.ts";
import { Rng } from "../tensor/rng.ts";

export interface GenerateOptions {
  /** One class label per image (length = number of images), or a count for an unconditional model. */
  labels: readonly number[] | number;
  /** Number of classes the model was trained with (labels must be below it); the null label is this number. */
  numClasses: number | null;
  steps: number;
  /** Classifier-free guidance scale w (1: conditional only, 0: unconditional only). */
  guidance?: number;
  /** Guidance rescale φ ∈ [0, 1]. */
  guidanceRescale?: number;
  seed?: number;
  eta?: number;
  /** Image side (default: the model's sample_size). */
  size?: number;
  onStep?: (info: {
    i: number;
    t: number;
    x: HostTensor<"float32">;
    x0: HostTensor<"float32">;
  }) => void | Promise<void>;
  signal?: AbortSignal;
}

export class CancelledError extends Error {
  override name = "CancelledError";
  constructor() {
    super("generation was cancelled");
  }
}

/** [−1, 1] model space → [0, 1] images, clamped. */
export function toUnitRange(x: HostTensor<"float32">): HostTensor<"float32"> {
  const out = new Float32Array(x.size);
  for (let i = 0; i < x.size; i++) out[i] = Math.min(1, Math.max(0, (x.data[i]! + 1) / 2));
  return new HostTensor(out, x.shape);
}

export async function generate(
  unet: UNet2DModel,
  scheduler: Scheduler,
  opts: GenerateOptions,
): Promise<HostTensor<"float32">> {
  const cfg = unet.typedConfig;
  const labels = typeof opts.labels === "number" ? null : opts.labels;
  const n = typeof opts.labels === "number" ? opts.labels : opts.labels.length;
  if (!Number.isInteger(n) || n < 1) throw new Error(`need at least one image to generate, got ${n}`);
  if (labels && opts.numClasses === null)
    throw new Error("this model is unconditional: it takes no class labels");
  if (labels && opts.numClasses !== null) {
    for (const l of labels) {
      if (!Number.isInteger(l) || l < 0 || l >= opts.numClasses) {
        throw new Error(`label ${l} is outside this model's classes 0..${opts.numClasses - 1}`);
      }
    }
  }
  const guidance = opts.guidance ?? 1;
  const size = opts.size ?? (typeof cfg.sampleSize === "number" ? cfg.sampleSize : 32);
  const shape = [n, cfg.inChannels, size, size];
  const rng = new Rng(opts.seed ?? 0);
  const xT = new HostTensor(rng.fold("xT").normal(n * cfg.inChannels * size * size), shape);
  const nullClass = opts.numClasses;
  const forward = (x: HostTensor, t: number, ys: readonly number[] | null) =>
    unet.forward(x as HostTensor<"float32">, t, ys ? { classLabels: ys } : {});

  let net: Network;
  if (!labels || nullClass === null) net = (x, t) => forward(x, t, null);
  else if (guidance === 1) net = (x, t) => forward(x, t, labels);
  else if (guidance === 0)
    net = (x, t) =>
      forward(
        x,
        t,
        labels.map(() => nullClass),
      );
  else {
    const both = [...labels.map(() => nullClass), ...labels];
    net = guidedNetwork((x, t) => forward(x, t, both), guidance, { rescale: opts.guidanceRescale ?? 0 });
  }
  const checked: Network = (x, t) => {
    if (opts.signal?.aborted) throw new CancelledError();
    return net(x, t);
  };
  const x = await scheduler.sample(checked, xT, {
    steps: opts.steps,
    eta: opts.eta ?? 0,
    noise: (s) => rng.normal(s.reduce((a, b) => a * b, 1)),
    ...(opts.onStep
      ? {
          onStep: async (info) => {
            await opts.onStep!({ i: info.i, t: info.t, x: info.x, x0: info.x0 });
          },
        }
      : {}),
  });
  return toUnitRange(x as HostTensor<"float32">);
}
