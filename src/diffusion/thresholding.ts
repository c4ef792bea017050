/**
 * Keeping x̂0 in range: static clipping, and dynamic thresholding (Saharia et al. 2022, "Photorealistic
 * Text-to-Image Diffusion Models with Deep Language Understanding", §2.3): per sample, s is the p-th
 * quantile of |x̂0|, clamped to [1, max]; x̂0 is clipped to [−s, s] and divided by s.
 *
 * Both act on a `Denoiser`'s x̂0 only; ε̂ is kept as the network gave it (as diffusers does), unless
 * `updateEps` asks for ε̂ = (x − α·x̂0)/σ from the clipped x̂0.
 */

import { HostTensor } from "../tensor/host.ts";
import { type F32, f32, map, zip } from "./float32.ts";
import type { Denoised, Denoiser, NoiseLevel } from "./parameterization.ts";

export interface ClipOptions {
  /** Recompute ε̂ from the clipped x̂0 (diffusers' `use_clipped_model_output`). */
  updateEps?: boolean;
}

function withX0(d: Denoised, x0: F32, x: F32, level: NoiseLevel, updateEps: boolean | undefined): Denoised {
  if (!updateEps) return { ...d, x0 };
  const { alpha, sigma } = level;
  return { ...d, x0, eps: zip(x, x0, (xi, x0i) => f32(xi - f32(alpha * x0i)) / sigma) };
}

/** Clips x̂0 to [−range, range]. */
export function clipX0(d: Denoiser, range: number, options: ClipOptions = {}): Denoiser {
  return async (x, level) => {
    const out = await d(x, level);
    const x0 = map(out.x0, (v) => Math.min(Math.max(v, -range), range));
    return withX0(out, x0, x, level, options.updateEps);
  };
}

/** torch.quantile(values, q) with linear interpolation, in float32 steps. */
export function quantile32(values: Float32Array, q: number): number {
  const sorted = Float32Array.from(values).sort();
  const rank = f32(f32(q) * (sorted.length - 1));
  const below = Math.floor(rank);
  const above = Math.ceil(rank);
  const w = f32(rank - below);
  const lo = sorted[below]!;
  const hi = sorted[above]!;
  const diff = f32(hi - lo);
  return w < 0.5 ? f32(lo + f32(w * diff)) : f32(hi - f32(diff * f32(1 - w)));
}

/** Dynamic thresholding of x̂0 over each sample (all dimensions but the first). */
export function dynamicThreshold(x0: F32, ratio: number, maxValue: number): F32 {
  const n = x0.shape[0] ?? 1;
  const per = x0.size / n;
  const out = new Float32Array(x0.size);
  for (let b = 0; b < n; b++) {
    const sample = x0.data.subarray(b * per, (b + 1) * per);
    const s = Math.min(Math.max(quantile32(sample.map(Math.abs), ratio), 1), f32(maxValue));
    for (let i = 0; i < per; i++) out[b * per + i] = Math.min(Math.max(sample[i]!, -s), s) / s;
  }
  return new HostTensor(out, x0.shape);
}

/** Dynamic thresholding of the denoiser's x̂0 (ratio: the quantile p, e.g. 0.995; maxValue: s's cap). */
export function thresholdX0(
  d: Denoiser,
  ratio: number,
  maxValue: number,
  options: ClipOptions = {},
): Denoiser {
  return async (x, level) => {
    const out = await d(x, level);
    return withX0(out, dynamicThreshold(out.x0, ratio, maxValue), x, level, options.updateEps);
  };
}
