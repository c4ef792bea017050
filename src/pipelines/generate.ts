/**
 * Generation with any registered denoiser: a model, a scheduler and classifier-free guidance (Ho &
 * Salimans 2022) as a transformation over conditions — [unconditional | conditional] in ONE batched
 * forward per step. Images come back in [0, 1]; `onStep` sees every step's x_t and x̂0 (live previews).
 */
import type { Conditioning } from "../diffusion/conditioning.ts";
import { batchOf, classCondition, noCondition } from "../diffusion/conditioning.ts";
import { classifierFreeGuidance } from "../diffusion/guidance.ts";
import type { Network } from "../diffusion/parameterization.ts";
import type { TensorLike, Timesteps } from "../models/denoiser-model.ts";
import type { BoundDenoiser } from "../models/registry.ts";
import type { Scheduler } from "../samplers/scheduler.ts";
import { HostTensor } from "../tensor/host.ts";
import { Rng } from "../tensor/rng.ts";

/** What generation needs of a model: its class-independent description and the conditional network. */
export interface ConditionalDenoiser {
  readonly bound: BoundDenoiser;
  denoise(x: TensorLike, t: Timesteps, cond: Conditioning): Promise<HostTensor<"float32">>;
}

/** A latent → image decoder (a VAE's, scaling undone): latents [N, c, h, w] → images [N, C, H, W] in [−1, 1]. */
export type LatentDecoder = (z: HostTensor<"float32">) => Promise<HostTensor<"float32">>;

export interface GenerateOptions {
  /**
   * One class label per image (length = number of images), or a count for an unconditional model.
   * Ignored when `conditions` is given.
   */
  labels?: readonly number[] | number;
  /**
   * The conditioning itself (e.g. prompt embeddings) and its unconditional counterpart (the empty or
   * negative prompt's), instead of labels. Both of one kind and batch size.
   */
  conditions?: { cond: Conditioning; uncond: Conditioning | null };
  /**
   * For a latent model: decodes the final latents (and, in `onStep`, x_t and x̂0) to images. `size`
   * is then the latent side.
   */
  decode?: LatentDecoder;
  /** Decode x_t and x̂0 for `onStep` too (live previews; costs a decode per step). Default false: latents. */
  decodePreviews?: boolean;
  /**
   * Real classes (labels must be below it) and the "no class" label; default: what the model's
   * config implies (a pipeline's diffuse.json may say otherwise for a U-Net).
   */
  numClasses?: number | null;
  nullLabel?: number | null;
  /** Labels for the unconditional half instead of the null label (negative conditioning). */
  negativeLabels?: readonly number[];
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

/** The condition and its unconditional counterpart for the asked labels, checked against the model. */
function conditions(
  model: BoundDenoiser,
  opts: GenerateOptions,
): { n: number; cond: Conditioning; uncond: Conditioning | null } {
  const spec = model.conditioning;
  if (opts.conditions) {
    const { cond, uncond } = opts.conditions;
    if (cond.kind !== spec.kind)
      throw new Error(`${model.className} is conditioned on "${spec.kind}", not on "${cond.kind}"`);
    const n = batchOf(cond);
    if (uncond && batchOf(uncond) !== n)
      throw new Error(`the unconditional half has ${batchOf(uncond)} samples for ${n} conditions`);
    return { n, cond, uncond };
  }
  if (opts.labels === undefined) throw new Error("give labels (or a count) or conditions to generate from");
  if (spec.kind === "text")
    throw new Error(`${model.className} is text-conditioned: give prompts (encoded by its text encoder)`);
  const n = typeof opts.labels === "number" ? opts.labels : opts.labels.length;
  if (!Number.isInteger(n) || n < 1) throw new Error(`need at least one image to generate, got ${n}`);
  if (typeof opts.labels === "number") {
    if (spec.kind === "class")
      throw new Error(`${model.className} is class-conditional: give one class label per image`);
    return { n, cond: noCondition(n), uncond: null };
  }
  if (spec.kind !== "class") throw new Error("this model is unconditional: it takes no class labels");
  const numClasses = opts.numClasses !== undefined ? opts.numClasses : spec.numClasses;
  const nullLabel = opts.nullLabel !== undefined ? opts.nullLabel : spec.nullLabel;
  const check = (l: number) => {
    if (numClasses !== null && (!Number.isInteger(l) || l < 0 || l >= numClasses)) {
      throw new Error(`label ${l} is outside this model's classes 0..${numClasses - 1}`);
    }
  };
  opts.labels.forEach(check);
  let uncond: Conditioning | null = null;
  if (opts.negativeLabels) {
    if (opts.negativeLabels.length !== n)
      throw new Error(
        `got ${opts.negativeLabels.length} negative labels for ${n} images; give one per image`,
      );
    opts.negativeLabels.forEach(check);
    uncond = classCondition(opts.negativeLabels);
  } else if (nullLabel !== null) {
    uncond = classCondition(opts.labels.map(() => nullLabel));
  }
  return { n, cond: classCondition(opts.labels), uncond };
}

export async function generate(
  model: ConditionalDenoiser,
  scheduler: Scheduler,
  opts: GenerateOptions,
): Promise<HostTensor<"float32">> {
  const bound = model.bound;
  const { n, cond, uncond } = conditions(bound, opts);
  const guidance = opts.guidance ?? 1;
  if (guidance !== 1 && !uncond) {
    throw new Error(
      `${bound.className} has no unconditional label to guide against; use guidance 1 (no classifier-free guidance)`,
    );
  }
  const geo = bound.geometry;
  const size = opts.size ?? geo.sampleSize ?? 32;
  if (size % geo.multipleOf !== 0) {
    throw new Error(`image size ${size} is not a multiple of ${geo.multipleOf}, as ${bound.className} needs`);
  }
  const shape = [n, geo.inChannels, size, size];
  const rng = new Rng(opts.seed ?? 0);
  const xT = new HostTensor(rng.fold("xT").normal(n * geo.inChannels * size * size), shape);
  const forward = (x: HostTensor, t: number, c: Conditioning) =>
    model.denoise(x as HostTensor<"float32">, t, c);
  const net: Network = classifierFreeGuidance(forward, cond, uncond ?? cond, guidance, {
    rescale: opts.guidanceRescale ?? 0,
  });
  const checked: Network = (x, t) => {
    if (opts.signal?.aborted) throw new CancelledError();
    return net(x, t);
  };
  const decode = opts.decode ?? ((z: HostTensor<"float32">) => Promise.resolve(z));
  const x = await scheduler.sample(checked, xT, {
    steps: opts.steps,
    eta: opts.eta ?? 0,
    noise: (s) => rng.normal(s.reduce((a, b) => a * b, 1)),
    ...(opts.onStep
      ? {
          onStep: async (info) => {
            const [x, x0] =
              opts.decode && opts.decodePreviews
                ? await Promise.all([
                    decode(info.x as HostTensor<"float32">),
                    decode(info.x0 as HostTensor<"float32">),
                  ])
                : [info.x as HostTensor<"float32">, info.x0 as HostTensor<"float32">];
            await opts.onStep!({ i: info.i, t: info.t, x, x0 });
          },
        }
      : {}),
  });
  return toUnitRange(await decode(x as HostTensor<"float32">));
}
