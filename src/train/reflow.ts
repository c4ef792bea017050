/**
 * Reflow (Liu, Gong & Liu 2023, "Flow Straight and Fast: Learning to Generate and Transfer Data with
 * Rectified Flow"; InstaFlow: Liu et al. 2024) of a flow-matching teacher, here on any registered
 * pixel denoiser sampled with FlowMatchEulerDiscreteScheduler.
 *
 * 1. Pairs. For pair i: noise z_i ~ N(0, I) from the pair's own seeded stream, label y_i = i mod K
 *    (balanced classes; none for an unconditional teacher), and the end point of the teacher's ODE
 *      x_i = ODE_teacher(z_i | y_i),   its Euler sampler, N steps, guidance ω folded in
 *    (x clamped to the teacher's image range, as its samples are). The coupling (z_i, x_i) is
 *    deterministic, so the straight line between its ends never crosses another pair's: that is what
 *    makes the new flow straighter than the teacher's (the paper's Theorem 3.6).
 * 2. Training. The student starts as the teacher and learns the straight flow of the pairs, with the
 *    flow-matching objective of `diffuse train` itself (train/objective.ts, diffusers' convention):
 *      σ ~ uniform | logit-normal | the teacher's sampling,   x_σ = (1 − σ)·x + σ·z,
 *      loss = ‖v_θ(x_σ, σ·T, y) − (z − x)‖²
 *    — the only difference from training on data is that the noise is the pair's z, not fresh.
 *    Optionally, from step `oneStepFrom` on, σ = 1 only: the student then regresses its one Euler
 *    step x̂ = z − v_θ(z, T, y) onto x (the "distill" stage of the paper and InstaFlow, with L2).
 * Guidance is in the pairs, so the student samples with guidance 1, in 1–4 steps.
 */
import type { ImageDataset } from "../data/dataset.ts";
import type { DataLoader } from "../data/loader.ts";
import { type Conditioning, classCondition, noCondition } from "../diffusion/conditioning.ts";
import { classifierFreeGuidance } from "../diffusion/guidance.ts";
import type { Network } from "../diffusion/parameterization.ts";
import type { ConditionalDenoiser } from "../pipelines/generate.ts";
import { Scheduler } from "../samplers/scheduler.ts";
import { HostTensor } from "../tensor/host.ts";
import { Rng } from "../tensor/rng.ts";
import { drawBatch, type Objective } from "./objective.ts";

export interface ReflowSettings {
  /** How many (z, x) pairs the teacher makes. */
  pairs: number;
  /** N, the teacher's Euler steps per pair. */
  teacherSteps: number;
  /** ω, the teacher's classifier-free guidance scale distilled into the student (1: none). */
  guidance: number;
  /** The pairs' seed: pair i's noise is stream fold("reflow-pairs").fold(i) of it. */
  seed: number;
  /** How σ is drawn: uniform, logit-normal (mean, std), or as the teacher was trained. */
  sigmaSampling: "uniform" | "logit-normal" | "teacher";
  logitMean: number;
  logitStd: number;
  /** From this training step on, σ = 1 only (one-step distillation); null: never. */
  oneStepFrom: number | null;
  /** Probability of training a sample on the "no class" label. */
  condDropout: number;
}

export const REFLOW_DEFAULTS: ReflowSettings = {
  pairs: 4000,
  teacherSteps: 20,
  guidance: 1.5,
  seed: 0,
  sigmaSampling: "uniform",
  logitMean: 0,
  logitStd: 1,
  oneStepFrom: null,
  condDropout: 0,
};

/**
 * The scheduler config a reflow teacher integrates its ODE with, and the student samples with: the
 * teacher's FlowMatchEulerDiscreteScheduler, deterministic (stochastic_sampling off). Other teachers
 * are refused with the method that fits them.
 */
export function reflowSchedulerConfig(teacher: Readonly<Record<string, unknown>>): Record<string, unknown> {
  const c = Scheduler.fromConfig(teacher).config;
  if (c.className !== "FlowMatchEulerDiscreteScheduler")
    throw new Error(
      `reflow needs a flow-matching teacher (FlowMatchEulerDiscreteScheduler, e.g. --teacher mnist-dit); this one samples with ${c.className}: distil it with --method lcm`,
    );
  return { ...teacher, stochastic_sampling: false };
}

/** σ's distribution as `diffuse train` fields, "teacher" read from the teacher's diffuse.json training config. */
export function reflowSigmaSampling(
  s: Pick<ReflowSettings, "sigmaSampling" | "logitMean" | "logitStd">,
  teacherInfo: Readonly<Record<string, unknown>>,
): { timestep_sampling: "uniform" | "logit-normal"; logit_mean: number; logit_std: number } {
  if (s.sigmaSampling !== "teacher")
    return { timestep_sampling: s.sigmaSampling, logit_mean: s.logitMean, logit_std: s.logitStd };
  const run = teacherInfo["training"] as { training?: Record<string, unknown> } | undefined;
  const t = run?.training;
  const kind = t?.["timestep_sampling"];
  if (kind !== "uniform" && kind !== "logit-normal")
    throw new Error(
      `reflow.sigma_sampling "teacher": the teacher's diffuse.json does not say how it drew its times (training.training.timestep_sampling); set reflow.sigma_sampling to "uniform" or "logit-normal"`,
    );
  return {
    timestep_sampling: kind,
    logit_mean: typeof t?.["logit_mean"] === "number" ? t["logit_mean"] : 0,
    logit_std: typeof t?.["logit_std"] === "number" ? t["logit_std"] : 1,
  };
}

/** What pair generation needs to know of the teacher besides its network. */
export interface PairGeometry {
  channels: number;
  size: number;
  /** Real classes (labels 0..K−1), or null for an unconditional teacher. */
  numClasses: number | null;
  /** The teacher's image range: x is clamped to it. */
  range: readonly [number, number];
}

/** A block of pairs: z and x [n, C, H, W] in the model's range, labels [n] (null: unconditional). */
export interface ReflowPairs {
  z: HostTensor<"float32">;
  x: HostTensor<"float32">;
  labels: HostTensor<"int64"> | null;
}

/** Pair i's noise z_i (C·H·W values): a function of the seed and i alone, whatever the chunking. */
export function pairNoise(seed: number, i: number, per: number): Float32Array {
  return new Rng(seed).fold("reflow-pairs").fold(i).normal(per);
}

/** Pair i's label: the classes in turn, so every class gets its share of the pairs. */
export const pairLabel = (i: number, numClasses: number): number => i % numClasses;

/**
 * Pairs from..to−1 of the teacher's ODE, in one batch: z, labels, then the teacher's guided Euler
 * sampler over N steps (`settings.teacherSteps`) on its own scheduler config.
 */
export async function teacherPairs(
  teacher: ConditionalDenoiser,
  schedulerConfig: Readonly<Record<string, unknown>>,
  settings: Pick<ReflowSettings, "teacherSteps" | "guidance" | "seed">,
  geo: PairGeometry,
  from: number,
  to: number,
): Promise<ReflowPairs> {
  const n = to - from;
  if (!(Number.isInteger(from) && Number.isInteger(to) && from >= 0 && n >= 1))
    throw new Error(`teacherPairs: need 0 ≤ from < to, got ${from}..${to}`);
  const bound = teacher.bound;
  const spec = bound.conditioning;
  if (spec.kind === "text")
    throw new Error(
      "reflow of text-to-image models is not built yet; reflow a class-conditional or unconditional model",
    );
  const per = geo.channels * geo.size * geo.size;
  const z = new Float32Array(n * per);
  for (let i = 0; i < n; i++) z.set(pairNoise(settings.seed, from + i, per), i * per);
  const zt = new HostTensor<"float32">(z, [n, geo.channels, geo.size, geo.size]);
  let labels: number[] | null = null;
  let net: Network;
  const denoise = (x: HostTensor, t: number, c: Conditioning) =>
    teacher.denoise(x as HostTensor<"float32">, t, c);
  if (spec.kind === "class") {
    if (geo.numClasses === null)
      throw new Error(`the ${bound.className} teacher is class-conditional but has no class count`);
    if (settings.guidance !== 1 && spec.nullLabel === null)
      throw new Error(
        `reflow.guidance ${settings.guidance} needs a teacher trained with a "no class" label; this ${bound.className} has none: use guidance 1`,
      );
    const ys = Array.from({ length: n }, (_, i) => pairLabel(from + i, geo.numClasses!));
    labels = ys;
    const uncond = classCondition(ys.map(() => spec.nullLabel ?? 0));
    net = classifierFreeGuidance(denoise, classCondition(ys), uncond, settings.guidance);
  } else {
    if (settings.guidance !== 1)
      throw new Error(`reflow.guidance ${settings.guidance}: the teacher is unconditional; use guidance 1`);
    net = classifierFreeGuidance(denoise, noCondition(n), noCondition(n), 1);
  }
  const scheduler = Scheduler.fromConfig(reflowSchedulerConfig(schedulerConfig));
  const out = await scheduler.sample(net, zt, { steps: settings.teacherSteps });
  const [lo, hi] = geo.range;
  const x = Float32Array.from(out.data, (v) => Math.min(hi, Math.max(lo, v)));
  return {
    z: zt,
    x: new HostTensor<"float32">(x, zt.shape),
    labels: labels
      ? new HostTensor(
          BigInt64Array.from(labels, (l) => BigInt(l)),
          [n],
        )
      : null,
  };
}

/** Every pair of a run, in memory: z and x [count, C, H, W] flat, labels [count] (null: unconditional). */
export interface PairSet {
  count: number;
  /** [C, H, W] of one pair. */
  shape: readonly [number, number, number];
  z: Float32Array;
  x: Float32Array;
  labels: Int32Array | null;
}

/**
 * The pairs' end points as a dataset the data loader shuffles and batches (its `images` are x in the
 * model's range here, not [0, 1]; the loader only copies them).
 */
export function pairDataset(set: PairSet): ImageDataset {
  const [channels, height, width] = set.shape;
  return { count: set.count, channels, height, width, images: set.x, labels: set.labels, classNames: null };
}

/**
 * Step k's feeds of the flow-matching loss (train/objective.ts) over a batch of pairs: x as the data,
 * the pairs' z as the noise, σ drawn from the step's stream — or σ = 1 for every sample once the
 * one-step stage has begun.
 */
export function drawReflowBatch(
  obj: Objective,
  set: PairSet,
  loader: DataLoader,
  k: number,
  rng: Rng,
  oneStep: boolean,
): Record<string, HostTensor> {
  const b = loader.batchAt(Math.floor(k / loader.batchesPerEpoch), k % loader.batchesPerEpoch);
  const per = set.shape[0] * set.shape[1] * set.shape[2];
  const n = b.indices.length;
  const z = new Float32Array(n * per);
  for (let i = 0; i < n; i++) {
    const at = b.indices[i]! * per;
    z.set(set.z.subarray(at, at + per), i * per);
  }
  const noise = new HostTensor<"float32">(z, b.images.shape);
  const flowTimes = oneStep ? new Array<number>(n).fill(1) : undefined;
  return drawBatch(obj, b.images, b.labels, rng, flowTimes ? { noise, flowTimes } : { noise });
}
