/**
 * Noise schedules of discrete-time diffusion (Ho et al. 2020, "Denoising Diffusion Probabilistic Models"):
 * betas β_t, ᾱ_t = ∏(1 − β_s), the signal-to-noise ratio SNR_t = ᾱ_t / (1 − ᾱ_t) and the
 * variance-exploding noise level σ_t = √((1 − ᾱ_t) / ᾱ_t) of Karras et al. (2022).
 *
 * Schedules are data, computed on the host in float64 and then rounded as the reference (diffusers, which
 * builds them as float32 torch tensors) rounds them, so checkpoints trained there sample identically here:
 * - `linear` and `scaled_linear` come from torch's float32 `linspace`, whose rounding is reproduced;
 * - `squaredcos_cap_v2` (the cosine schedule of Nichol & Dhariwal 2021) is computed in float64, capped at
 *   0.999, then rounded;
 * - ᾱ is a running product accumulated in float64 and rounded per element (torch's CPU cumprod);
 * - zero-terminal-SNR rescaling follows Lin et al. 2023 ("Common Diffusion Noise Schedules and Sample Steps
 *   are Flawed", Algorithm 1), in float32 steps.
 */

import { f32, sqrt32 } from "./float32.ts";

export type BetaScheduleKind = "linear" | "scaled_linear" | "squaredcos_cap_v2" | "sigmoid" | "exp";

export interface BetaScheduleConfig {
  kind: BetaScheduleKind;
  /** T, the number of training timesteps. */
  numTrainTimesteps: number;
  betaStart: number;
  betaEnd: number;
}

/**
 * torch.linspace(start, end, steps, dtype=float32) on CPU, bit for bit (AVX2 kernel): the first half counts up
 * from `start`, the second half down from `end`, eight lanes at a time with fused multiply-adds.
 */
export function torchLinspace32(start: number, end: number, steps: number): Float32Array {
  const out = new Float32Array(steps);
  if (steps === 1) {
    out[0] = start;
    return out;
  }
  const a = f32(start);
  const b = f32(end);
  const step = f32(f32(b - a) / (steps - 1));
  const half = Math.floor(steps / 2);
  const scalar = (i: number): number => (i < half ? f32(a + step * i) : f32(b - step * (steps - i - 1)));
  const lanes = (i0: number): void => {
    const base = scalar(i0);
    out[i0] = base;
    // Lane j is base + j·step, fused (one rounding), except lane 7, which the compiled kernel rounds twice.
    for (let j = 1; j < 8; j++) out[i0 + j] = j === 7 ? f32(base + f32(7 * step)) : f32(base + j * step);
  };
  let i = 0;
  for (; i <= steps - 16; i += 16) {
    lanes(i);
    lanes(i + 8);
  }
  for (; i < steps; i++) out[i] = scalar(i);
  return out;
}

/** numpy.linspace(start, stop, num) in float64: start + i·step, the last point exactly `stop`. */
export function linspace(start: number, stop: number, num: number, endpoint = true): number[] {
  if (num <= 0) return [];
  const div = endpoint ? num - 1 : num;
  const step = div > 0 ? (stop - start) / div : 0;
  const out: number[] = [];
  for (let i = 0; i < num; i++) out.push(i * step + start);
  if (endpoint && num > 1) out[num - 1] = stop;
  return out;
}

/**
 * Betas from a continuous ᾱ(t) on t ∈ [0, 1] (Nichol & Dhariwal 2021, eq. 17):
 * β_i = min(1 − ᾱ((i+1)/T) / ᾱ(i/T), maxBeta), in float64.
 */
export function betasForAlphaBar(T: number, alphaBar: (t: number) => number, maxBeta = 0.999): number[] {
  const betas: number[] = [];
  for (let i = 0; i < T; i++) betas.push(Math.min(1 - alphaBar((i + 1) / T) / alphaBar(i / T), maxBeta));
  return betas;
}

/** The cosine ᾱ(t) = cos²((t + s)/(1 + s) · π/2) with s = 0.008 (Nichol & Dhariwal 2021). */
export const cosineAlphaBar = (t: number): number => Math.cos(((t + 0.008) / 1.008) * (Math.PI / 2)) ** 2;

/** ᾱ(t) = exp(−12 t), the `exp` schedule of diffusers' Heun/KDPM2 schedulers. */
export const expAlphaBar = (t: number): number => Math.exp(t * -12.0);

/** The betas of a named schedule, rounded to float32 as diffusers rounds them. */
export function betaSchedule(config: BetaScheduleConfig): Float32Array {
  const { kind, numTrainTimesteps: T, betaStart, betaEnd } = config;
  switch (kind) {
    case "linear":
      return torchLinspace32(betaStart, betaEnd, T);
    case "scaled_linear":
      // Latent diffusion's schedule: linear in √β.
      return torchLinspace32(Math.sqrt(betaStart), Math.sqrt(betaEnd), T).map((b) => b * b);
    case "squaredcos_cap_v2":
      return Float32Array.from(betasForAlphaBar(T, cosineAlphaBar));
    case "exp":
      return Float32Array.from(betasForAlphaBar(T, expAlphaBar));
    case "sigmoid": {
      // GeoDiff's sigmoid schedule: β = sigmoid(linspace(−6, 6)) · (end − start) + start, in float32.
      const range = f32(betaEnd - betaStart);
      return torchLinspace32(-6, 6, T).map((v) =>
        f32(f32(f32(1 / (1 + Math.exp(-v))) * range) + f32(betaStart)),
      );
    }
  }
}

/** ᾱ_t = ∏_{s≤t} (1 − β_s): α = 1 − β in float32, the product accumulated in float64, rounded per element. */
export function alphasCumprod(betas: ArrayLike<number>): Float32Array {
  const out = new Float32Array(betas.length);
  let acc = 1;
  for (let i = 0; i < betas.length; i++) {
    acc *= f32(1 - betas[i]!);
    out[i] = acc;
  }
  return out;
}

/**
 * Rescales betas so that ᾱ_T = 0 exactly (zero terminal SNR) while keeping ᾱ_0 (Lin et al. 2023, Alg. 1):
 * √ᾱ ← (√ᾱ − √ᾱ_T) · √ᾱ_0 / (√ᾱ_0 − √ᾱ_T). Float32 steps, as the reference computes it.
 */
export function rescaleZeroTerminalSnr(betas: ArrayLike<number>): Float32Array {
  const T = betas.length;
  const sqrtBar = alphasCumprod(betas).map((a) => Math.sqrt(a));
  const first = sqrtBar[0]!;
  const last = sqrtBar[T - 1]!;
  const scale = f32(first / f32(first - last));
  const bar = sqrtBar.map((s) => {
    const shifted = f32(f32(s - last) * scale);
    return shifted * shifted;
  });
  const out = new Float32Array(T);
  out[0] = f32(1 - bar[0]!);
  for (let i = 1; i < T; i++) out[i] = f32(1 - f32(bar[i]! / bar[i - 1]!));
  return out;
}

/** A discrete noise schedule: β, α = 1 − β and ᾱ, all float32 as diffusers stores them. */
export interface NoiseSchedule {
  betas: Float32Array;
  alphas: Float32Array;
  alphasCumprod: Float32Array;
}

export interface NoiseScheduleOptions extends BetaScheduleConfig {
  /** Explicit betas (diffusers' `trained_betas`), overriding kind/start/end. */
  trainedBetas?: readonly number[] | null;
  /** Rescale to zero terminal SNR (Lin et al. 2023). */
  rescaleZeroSnr?: boolean;
}

export function noiseSchedule(options: NoiseScheduleOptions): NoiseSchedule {
  let betas = options.trainedBetas ? Float32Array.from(options.trainedBetas) : betaSchedule(options);
  if (options.rescaleZeroSnr) betas = rescaleZeroTerminalSnr(betas);
  return { betas, alphas: betas.map((b) => 1 - b), alphasCumprod: alphasCumprod(betas) };
}

/** SNR_t = ᾱ_t / (1 − ᾱ_t) (Kingma et al. 2021), in float64. */
export function snr(alphaBar: number): number {
  return alphaBar / (1 - alphaBar);
}

/** The variance-exploding noise level σ = √((1 − ᾱ) / ᾱ) of each ᾱ, in float32 steps as diffusers does. */
export function karrasSigmasFromAlphaBar(alphasCumprod: ArrayLike<number>): Float32Array {
  const out = new Float32Array(alphasCumprod.length);
  for (let i = 0; i < out.length; i++) {
    const a = alphasCumprod[i]!;
    out[i] = sqrt32(f32(f32(1 - a) / a));
  }
  return out;
}

/** σ ↔ ᾱ for the variance-preserving path: ᾱ = 1 / (1 + σ²). */
export function alphaBarFromSigma(sigma: number): number {
  return 1 / (1 + sigma * sigma);
}
