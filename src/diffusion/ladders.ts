/**
 * Sigma ladders: the decreasing noise levels σ_0 > σ_1 > … a sampler visits, in the variance-exploding
 * parameterization x = x0 + σ·ε (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based
 * Generative Models"), and the mapping between σ and the discrete timesteps a network was trained on.
 * - `karrasSigmas`: σ_i = (σ_max^{1/ρ} + i/(N−1)·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ (EDM eq. 5, ρ = 7);
 * - `exponentialSigmas`: log-uniform between σ_max and σ_min;
 * - `betaSigmas`: spaced by the Beta(0.6, 0.6) quantile (Lee et al. 2024, "Beta Sampling is All You Need");
 * - `shiftSigmas`: the flow-matching time shift σ' = sσ / (1 + (s − 1)σ) (Esser et al. 2024, SD3);
 * - `sigmaToTimestep`: a fractional timestep by linear interpolation in log σ, as k-diffusion does.
 * All in float64, numpy's arithmetic order kept so that float32 rounding matches the reference.
 */

import { betaQuantile } from "./beta-quantile.ts";
import { f32 } from "./float32.ts";
import { linspace } from "./schedules.ts";

/** Karras et al. (2022) ladder of n sigmas from sigmaMax down to sigmaMin. */
export function karrasSigmas(n: number, sigmaMin: number, sigmaMax: number, rho = 7): number[] {
  const minInv = sigmaMin ** (1 / rho);
  const maxInv = sigmaMax ** (1 / rho);
  return linspace(0, 1, n).map((r) => (maxInv + r * (minInv - maxInv)) ** rho);
}

/** n sigmas evenly spaced in log σ from sigmaMax down to sigmaMin. */
export function exponentialSigmas(n: number, sigmaMin: number, sigmaMax: number): number[] {
  return linspace(Math.log(sigmaMax), Math.log(sigmaMin), n).map(Math.exp);
}

/** n sigmas at the Beta(α, β) quantiles of 1 − linspace(0, 1, n), from sigmaMax down to sigmaMin. */
export function betaSigmas(n: number, sigmaMin: number, sigmaMax: number, alpha = 0.6, beta = 0.6): number[] {
  return linspace(0, 1, n).map((u) => sigmaMin + betaQuantile(1 - u, alpha, beta) * (sigmaMax - sigmaMin));
}

/** The flow-matching shift: σ' = s·σ / (1 + (s − 1)·σ); s > 1 spends more steps at high noise. */
export function shiftSigmas(sigmas: readonly number[], shift: number): number[] {
  return sigmas.map((s) => (shift * s) / (1 + (shift - 1) * s));
}

/** numpy.interp(x, xp, fp) for increasing xp: linear interpolation, clamped to the end values. */
export function interp(x: number, xp: ArrayLike<number>, fp: ArrayLike<number>): number {
  const n = xp.length;
  if (x <= xp[0]!) return fp[0]!;
  if (x >= xp[n - 1]!) return fp[n - 1]!;
  let lo = 0;
  let hi = n - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (xp[mid]! <= x) lo = mid;
    else hi = mid;
  }
  const slope = (fp[lo + 1]! - fp[lo]!) / (xp[lo + 1]! - xp[lo]!);
  return slope * (x - xp[lo]!) + fp[lo]!;
}

/** σ of a fractional training timestep: numpy.interp over the per-timestep sigmas. */
export function timestepToSigma(t: number, sigmas: ArrayLike<number>): number {
  const n = sigmas.length;
  if (t <= 0) return sigmas[0]!;
  if (t >= n - 1) return sigmas[n - 1]!;
  const lo = Math.floor(t);
  if (lo === t) return sigmas[lo]!;
  const slope = sigmas[lo + 1]! - sigmas[lo]!;
  return slope * (t - lo) + sigmas[lo]!;
}

/**
 * The fractional timestep of σ: linear interpolation of log σ between the two training timesteps that
 * bracket it (k-diffusion's `sigma_to_t`). `logSigmas` are the logs of the increasing per-timestep sigmas.
 */
export function sigmaToTimestep(sigma: number, logSigmas: ArrayLike<number>): number {
  const n = logSigmas.length;
  const logSigma = Math.log(Math.max(sigma, 1e-10));
  // The last index whose log σ is ≤ log σ (0 if none), kept below n − 1 so that [low, low + 1] exists.
  let low = 0;
  for (let i = 0; i < n; i++) if (logSigmas[i]! <= logSigma) low = i;
  low = Math.min(low, n - 2);
  const lo = logSigmas[low]!;
  const hi = logSigmas[low + 1]!;
  const w = Math.min(1, Math.max(0, (lo - logSigma) / (lo - hi)));
  return (1 - w) * low + w * (low + 1);
}

/**
 * `sigmaToTimestep` against a float32 table of log σ, as the reference computes it: under numpy 1.x
 * casting rules the float64 log σ meets a float32 array, so the comparison and the interpolation weight
 * are float32; only the final blend of the two indices is float64.
 */
export function sigmaToTimestepF32(sigma: number, logSigmas32: ArrayLike<number>): number {
  const n = logSigmas32.length;
  const logSigma = f32(Math.log(Math.max(sigma, 1e-10)));
  let low = 0;
  for (let i = 0; i < n; i++) if (f32(logSigma - logSigmas32[i]!) >= 0) low = i;
  low = Math.min(low, n - 2);
  const lo = logSigmas32[low]!;
  const hi = logSigmas32[low + 1]!;
  const w = Math.min(1, Math.max(0, f32(f32(lo - logSigma) / f32(lo - hi))));
  return f32(1 - w) * low + w * (low + 1);
}
