/**
 * DDIM (Song et al. 2021, "Denoising Diffusion Implicit Models", eq. 12 and 16): from x_t,
 *   x_prev = √ᾱ_prev·x̂0 + √(1 − ᾱ_prev − σ_t²)·ε̂ + σ_t·z,
 *   σ_t = η·√((1 − ᾱ_prev)/(1 − ᾱ_t))·√(1 − ᾱ_t/ᾱ_prev).
 * η = 0 is the deterministic DDIM sampler, η = 1 has DDPM's posterior variance.
 *
 * x lives on the variance-preserving path. Float32 arithmetic in diffusers' order (DDIMScheduler.step);
 * noise is drawn on every step when η > 0.
 */

import { type F32, f32, sqrt32, zip } from "../diffusion/float32.ts";
import { type Denoiser, vpLevel } from "../diffusion/parameterization.ts";
import { type AlphaBarStep, drawNoise, type NoiseFn, type SamplerOptions } from "./types.ts";

export interface DdimOptions extends SamplerOptions {
  /** η ∈ [0, 1]: 0 deterministic; > 0 needs `noise`. */
  eta?: number;
  noise?: NoiseFn;
  /** Recompute ε̂ from the (clipped) x̂0 (diffusers' `use_clipped_model_output`). */
  epsFromX0?: boolean;
}

/** DDIM's σ_t² / η²: the DDPM posterior variance between ᾱ_t and ᾱ_prev. */
export function ddimVariance(alphaBar: number, alphaBarPrev: number): number {
  const beta = f32(1 - alphaBar);
  const betaPrev = f32(1 - alphaBarPrev);
  return f32(f32(betaPrev / beta) * f32(1 - f32(alphaBar / alphaBarPrev)));
}

export async function ddim(
  denoise: Denoiser,
  x: F32,
  steps: readonly AlphaBarStep[],
  options: DdimOptions = {},
): Promise<F32> {
  const { onStep } = options;
  const eta = options.eta ?? 0;
  if (!(eta >= 0)) throw new Error(`DDIM eta must be >= 0, got ${eta}`);
  for (let i = 0; i < steps.length; i++) {
    const { t, alphaBar, alphaBarPrev } = steps[i]!;
    const level = vpLevel(alphaBar, t);
    const out = await denoise(x, level);
    const x0 = out.x0;
    const eps = options.epsFromX0
      ? zip(x, x0, (xi, x0i) => f32(xi - f32(level.alpha * x0i)) / level.sigma)
      : out.eps;
    const std = f32(f32(eta) * sqrt32(ddimVariance(alphaBar, alphaBarPrev)));
    const dirScale = sqrt32(f32(f32(1 - alphaBarPrev) - f32(std * std)));
    const x0Scale = sqrt32(alphaBarPrev);
    x = zip(x0, eps, (x0i, e) => f32(x0Scale * x0i) + f32(dirScale * e));
    if (eta > 0) {
      if (!options.noise) throw new Error("ddim: eta > 0 draws noise; pass options.noise");
      const z = drawNoise(options.noise, x);
      x = zip(x, z, (xi, zi) => xi + f32(std * zi));
    }
    await onStep?.({ i, t, x, x0 });
  }
  return x;
}
