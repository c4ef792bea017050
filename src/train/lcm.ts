/**
 * Consistency distillation as the Latent Consistency Models paper does it (Luo et al. 2023, "Latent
 * Consistency Models", Alg. 1; consistency models: Song et al. 2023), here on any registered pixel or
 * latent denoiser of the variance-preserving kind (ε, v or x₀ prediction).
 *
 * A solver grid of N points on the teacher's T training timesteps, k = ⌊T/N⌋ apart:
 *   t_n = (n + 1)·k − 1,  n = 0..N−1   (T = 1000, N = 50: 19, 39, …, 999; LCMScheduler's
 *   `original_inference_steps` grid, so the student samples on the points it was trained on)
 * For each sample: data x₀, a uniform index n, ε ~ N(0, I), and
 *   x_{n+k}  = √ᾱ(t_n)·x₀ + √(1 − ᾱ(t_n))·ε                         (the start point)
 *   teacher  F = F(∅) + ω·(F(c) − F(∅))                               (guidance ω folded in, ONE batched
 *                                                                      forward of [∅ | c]; F is linear in
 *                                                                      the output, so guiding F guides x̂₀ and ε̂)
 *   x_n      = √ᾱ(s)·x̂₀(F) + √(1 − ᾱ(s))·ε̂(F),  s = t_{n−1} (0 for n = 0)   (one DDIM step of the teacher)
 *   f(x, t)  = c_skip(t)·x + c_out(t)·x̂₀(x, net(x, t))               (the consistency function)
 *   loss     = mean d(f_θ(x_{n+k}, t_n), f_θ⁻(x_n, s))                 (θ⁻: the EMA target network)
 *   d(a, b)  = √((a − b)² + c²) − c  (pseudo-Huber, c = 0.001 as LCM), or (a − b)²
 * with c_skip = σ_d²/((κt)² + σ_d²), c_out = κt/√((κt)² + σ_d²), σ_d = 0.5, κ = 10 (samplers/lcm.ts):
 * at t = 0, c_skip = 1 and c_out = 0 exactly, the boundary condition f(x, 0) = x.
 *
 * ω is diffusers' guidance scale (1: no guidance; the LCM paper's w is ω − 1). The students here are
 * distilled at ONE ω: the pixel U-Net (UNet2DModel) has no guidance-embedding input (diffusers puts
 * `time_cond_proj_dim` on UNet2DConditionModel only, and a teacher without it would need the new
 * projection trained from scratch), so the student samples without guidance and draws what the
 * teacher draws at ω. ∅ is the null class label, or for a text-to-image teacher (latent LCM, the
 * paper's Stable Diffusion setting: lcm-text.ts) the empty prompt's embedding; c the label or the
 * caption's embedding. The student, teacher and target network are traced into the one
 * training-step graph: the teacher's weights as constants (no gradient), the target's as inputs
 * `target.<name>`, fed the train state's EMA each step (the EMA update itself is the step's).
 *
 * On the host (per step, from a per-step RNG stream): n, ε, and every per-sample coefficient, from the
 * same float32 formulas the samplers use (`estimate`, `vpLevel`, `lcmScalings`) — this file; the
 * traced networks and the loss over them are lcm-loss.ts.
 */
import {
  type Conditioning,
  classCondition,
  concatConditions,
  noCondition,
} from "../diffusion/conditioning.ts";
import type { F32 } from "../diffusion/float32.ts";
import { estimate, type Prediction, vpLevel } from "../diffusion/parameterization.ts";
import type { BoundDenoiser, CondSizes } from "../models/registry.ts";
import type { InputSpec } from "../runtime/compile.ts";
import { lcmScalings } from "../samplers/lcm.ts";
import { HostTensor } from "../tensor/host.ts";
import type { Rng } from "../tensor/rng.ts";

export type ConsistencyDistance = "huber" | "l2";

export interface LcmSettings {
  /** N, the points of the teacher's solver grid (k = ⌊T/N⌋ timesteps apart); LCM: 50. */
  solverSteps: number;
  /** ω, the teacher's classifier-free guidance scale folded into the student (1: none). */
  guidance: number;
  distance: ConsistencyDistance;
  /** c of the pseudo-Huber distance. */
  huberC: number;
  /** κ of the boundary condition (LCMScheduler's timestep_scaling). */
  timestepScaling: number;
}

export const LCM_DEFAULTS: LcmSettings = {
  solverSteps: 50,
  guidance: 1.5,
  distance: "huber",
  huberC: 0.001,
  timestepScaling: 10,
};

/** Graph inputs of the target network's weights: `target.<parameter name>`. */
export const TARGET_PREFIX = "target.";

/** The solver grid t_n = (n + 1)·⌊T/N⌋ − 1 (LCM's DDIMSolver; LCMScheduler's origin timesteps). */
export function solverTimesteps(numTrainTimesteps: number, solverSteps: number): number[] {
  if (!Number.isInteger(solverSteps) || solverSteps < 1 || solverSteps > numTrainTimesteps)
    throw new Error(
      `the solver grid needs 1 to ${numTrainTimesteps} points (the teacher's training timesteps), got ${solverSteps}`,
    );
  const k = Math.floor(numTrainTimesteps / solverSteps);
  return Array.from({ length: solverSteps }, (_, n) => (n + 1) * k - 1);
}

/** x̂₀ and ε̂ as linear in the input x and the network output F: x̂₀ = x0[0]·x + x0[1]·F, ε̂ likewise. */
export interface EstimateCoefficients {
  x0: [number, number];
  eps: [number, number];
}

/** The coefficients `estimate` (diffusion/parameterization.ts) applies, read off by probing it: it is linear. */
export function estimateCoefficients(
  prediction: Prediction,
  level: { alpha: number; sigma: number; t: number },
): EstimateCoefficients {
  const unit = (i: number): F32 => new HostTensor(Float32Array.from([i === 0 ? 1 : 0, i === 1 ? 1 : 0]), [2]);
  // x = e₀, F = e₁: element 0 is the coefficient of x, element 1 that of F
  const d = estimate(prediction, unit(1), unit(0), level);
  return { x0: [d.x0.data[0]!, d.x0.data[1]!], eps: [d.eps.data[0]!, d.eps.data[1]!] };
}

/** Everything the host needs to draw a step's batch: the teacher's schedule and conditioning, the settings. */
export interface LcmPlan {
  readonly settings: LcmSettings;
  readonly prediction: Prediction;
  readonly alphasCumprod: Float32Array;
  readonly grid: readonly number[];
  readonly model: BoundDenoiser;
}

/** The plan of a teacher; refuses flow-matching teachers and guidance without a null label. */
export function lcmPlan(
  model: BoundDenoiser,
  prediction: Prediction,
  alphasCumprod: Float32Array | null,
  settings: LcmSettings,
): LcmPlan {
  if (prediction === "flow" || !alphasCumprod)
    throw new Error(
      "LCM distils a variance-preserving teacher (ε, v or x₀ prediction); a flow-matching teacher is for --method reflow",
    );
  const spec = model.conditioning;
  // a text teacher's unconditional input is the empty prompt's embedding (lcm-text.ts feeds it)
  if (settings.guidance !== 1 && spec.kind !== "text" && !(spec.kind === "class" && spec.nullLabel !== null))
    throw new Error(
      `guidance ${settings.guidance} needs a teacher trained with a "no class" label; this ${model.className} has none: use guidance 1`,
    );
  return {
    settings,
    prediction,
    alphasCumprod,
    grid: solverTimesteps(alphasCumprod.length, settings.solverSteps),
    model,
  };
}

/** The per-sample scalars of one sample: its start and end timestep and the coefficients at each. */
export interface LcmSample {
  /** t_n, where the student is evaluated. */
  start: number;
  /** s = t_{n−1} (0 for n = 0): where the teacher's DDIM step lands and the target is evaluated. */
  end: number;
}

/** The start and end timestep of grid index n. */
export function lcmSample(plan: Pick<LcmPlan, "grid">, n: number): LcmSample {
  const start = plan.grid[n];
  if (start === undefined) throw new Error(`grid index ${n} is outside 0..${plan.grid.length - 1}`);
  return { start, end: n > 0 ? plan.grid[n - 1]! : 0 };
}

/** Per-sample [B, 1, 1, 1] scalars of the graph, by input name. */
const SCALARS = [
  "a_start", // √ᾱ(t_n): noising x₀
  "s_start", // √(1 − ᾱ(t_n))
  "x0_x", // x̂₀ at t_n: coefficient of x
  "x0_f", //            and of the network output F
  "eps_x", // ε̂ at t_n (the teacher's DDIM step)
  "eps_f",
  "a_end", // √ᾱ(s): the DDIM step lands here
  "s_end",
  "end_x0_x", // x̂₀ at s (the target network)
  "end_x0_f",
  "skip_start", // c_skip(t_n), c_out(t_n)
  "out_start",
  "skip_end", // c_skip(s), c_out(s)
  "out_end",
] as const;

type ScalarName = (typeof SCALARS)[number];

/** The scalars of one sample, from the float32 formulas the samplers use. */
export function lcmScalars(plan: LcmPlan, s: LcmSample): Record<ScalarName, number> {
  const ac = plan.alphasCumprod;
  const at = vpLevel(ac[s.start]!, s.start);
  const ae = vpLevel(ac[s.end]!, s.end);
  const kStart = estimateCoefficients(plan.prediction, at);
  const kEnd = estimateCoefficients(plan.prediction, ae);
  const cStart = lcmScalings(s.start, plan.settings.timestepScaling);
  const cEnd = lcmScalings(s.end, plan.settings.timestepScaling);
  return {
    a_start: at.alpha,
    s_start: at.sigma,
    x0_x: kStart.x0[0],
    x0_f: kStart.x0[1],
    eps_x: kStart.eps[0],
    eps_f: kStart.eps[1],
    a_end: ae.alpha,
    s_end: ae.sigma,
    end_x0_x: kEnd.x0[0],
    end_x0_f: kEnd.x0[1],
    skip_start: cStart.cSkip,
    out_start: cStart.cOut,
    skip_end: cEnd.cSkip,
    out_end: cEnd.cOut,
  };
}

/** The teacher is evaluated on [∅ | c] (2B samples) when it is guided, else on c alone. */
const guided = (plan: Pick<LcmPlan, "settings">): boolean => plan.settings.guidance !== 1;

/** Graph inputs of one distillation batch (without the target network's weights). */
export function lcmBatchSpecs(
  plan: LcmPlan,
  batch: number,
  size: number,
  sizes?: CondSizes,
): Record<string, InputSpec> {
  const img = [batch, plan.model.geometry.inChannels, size, size];
  const specs: Record<string, InputSpec> = {
    x0: { shape: img },
    noise: { shape: img },
    t_start: { shape: [batch] },
    t_end: { shape: [batch] },
  };
  for (const k of SCALARS) specs[k] = { shape: [batch, 1, 1, 1] };
  for (const [k, v] of Object.entries(plan.model.condInputs(batch, sizes))) specs[`cond.${k}`] = v;
  const tb = guided(plan) ? 2 * batch : batch;
  for (const [k, v] of Object.entries(plan.model.condInputs(tb, sizes))) specs[`teacher_cond.${k}`] = v;
  return specs;
}

/**
 * The condition c of a batch and its unconditional counterpart ∅ (used when the teacher is guided):
 * class labels and the null label, nothing, or (lcm-text.ts) the captions' and the empty prompt's
 * text embeddings.
 */
export interface LcmConditions {
  cond: Conditioning;
  uncond: Conditioning | null;
}

/** The conditions of a label batch (labels, or none). */
function labelConditions(plan: LcmPlan, labels: readonly number[] | null, n: number): LcmConditions {
  const spec = plan.model.conditioning;
  if (spec.kind === "text")
    throw new Error(`the ${plan.model.className} teacher is text-conditional: feed text embeddings`);
  if (spec.kind === "class" && !labels)
    throw new Error(`the ${plan.model.className} teacher is class-conditional: the data needs labels`);
  if (spec.kind !== "class") return { cond: noCondition(n), uncond: null };
  const nul = spec.nullLabel;
  return {
    cond: classCondition(labels!),
    uncond: nul === null ? null : classCondition(labels!.map(() => nul)),
  };
}

/** The student's and target's condition (c), and the teacher's ([∅ | c] when guided). */
function batchConditions(plan: LcmPlan, c: LcmConditions) {
  if (!guided(plan)) return { cond: c.cond, teacher: c.cond };
  if (c.uncond === null) throw new Error("a guided teacher needs the batch's unconditional input");
  return { cond: c.cond, teacher: concatConditions(c.uncond, c.cond) };
}

/** A step's feeds: x₀ [B, C, H, W] in the model's range, labels [B] (null: unconditional), the step's RNG. */
export function drawLcmBatch(
  plan: LcmPlan,
  x0: HostTensor<"float32">,
  labels: HostTensor<"int64"> | null,
  rng: Rng,
): Record<string, HostTensor> {
  return drawLcmBatchWith(
    plan,
    x0,
    labelConditions(plan, labels ? labels.toArray() : null, x0.shape[0]!),
    rng,
  );
}

/** A step's feeds for given conditions (a text batch's embeddings: lcm-text.ts). */
export function drawLcmBatchWith(
  plan: LcmPlan,
  x0: HostTensor<"float32">,
  conditions: LcmConditions,
  rng: Rng,
): Record<string, HostTensor> {
  const n = x0.shape[0]!;
  const idx = Array.from({ length: n }, () => rng.int(plan.grid.length));
  const noise = new HostTensor<"float32">(rng.normal(x0.size), x0.shape);
  return lcmFeedsWith(plan, x0, noise, idx, conditions);
}

/** The feeds for given grid indices and noise (drawLcmBatch draws them; tests pick them). */
export function lcmFeeds(
  plan: LcmPlan,
  x0: HostTensor<"float32">,
  noise: HostTensor<"float32">,
  indices: readonly number[],
  labels: readonly number[] | null,
): Record<string, HostTensor> {
  return lcmFeedsWith(plan, x0, noise, indices, labelConditions(plan, labels, x0.shape[0]!));
}

/** The feeds for given grid indices, noise and conditions. */
export function lcmFeedsWith(
  plan: LcmPlan,
  x0: HostTensor<"float32">,
  noise: HostTensor<"float32">,
  indices: readonly number[],
  conditions: LcmConditions,
): Record<string, HostTensor> {
  const n = x0.shape[0]!;
  const samples = indices.map((i) => lcmSample(plan, i));
  const scalars = samples.map((s) => lcmScalars(plan, s));
  const feeds: Record<string, HostTensor> = {
    x0,
    noise,
    t_start: new HostTensor(
      Float32Array.from(samples, (s) => s.start),
      [n],
    ),
    t_end: new HostTensor(
      Float32Array.from(samples, (s) => s.end),
      [n],
    ),
  };
  for (const k of SCALARS)
    feeds[k] = new HostTensor(
      Float32Array.from(scalars, (s) => s[k]),
      [n, 1, 1, 1],
    );
  const { cond, teacher } = batchConditions(plan, conditions);
  for (const [k, v] of Object.entries(plan.model.condFeeds(cond))) feeds[`cond.${k}`] = v;
  for (const [k, v] of Object.entries(plan.model.condFeeds(teacher))) feeds[`teacher_cond.${k}`] = v;
  return feeds;
}
