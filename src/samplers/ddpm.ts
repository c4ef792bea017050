/**
 * Ancestral sampling of DDPM (Ho et al. 2020, Alg. 2, via the posterior q(x_prev | x_t, x̂0) of eq. 6–7):
 *   x_prev = (√ᾱ_prev·β_t/(1 − ᾱ_t))·x̂0 + (√α_t·(1 − ᾱ_prev)/(1 − ᾱ_t))·x_t + σ_t·z,
 * with α_t = ᾱ_t/ᾱ_prev and β_t = 1 − α_t over the (possibly strided) step, and the variance
 * - `fixed_small`: β̃_t = (1 − ᾱ_prev)/(1 − ᾱ_t)·β_t (the posterior variance, clamped at 1e-20);
 * - `fixed_large`: β_t;
 * - `learned` / `learned_range`: predicted by the network (Nichol & Dhariwal 2021, eq. 15: an
 *   interpolation v between log β̃_t and log β_t, exp(v·log β_t + (1 − v)·log β̃_t) with v = (out + 1)/2).
 *
 * x lives on the variance-preserving path. No noise is added when stepping from t = 0. Float32
 * arithmetic in diffusers' order (DDPMScheduler.step).
 */

import { type F32, f32, log32, sqrt32, zip } from "../diffusion/float32.ts";
import { type Denoiser, vpLevel } from "../diffusion/parameterization.ts";
import { type AlphaBarStep, drawNoise, type StochasticOptions } from "./types.ts";

export type DdpmVariance = "fixed_small" | "fixed_small_log" | "fixed_large" | "learned" | "learned_range";

export interface DdpmOptions extends StochasticOptions {
  variance?: DdpmVariance;
}

/** The noise std of one step: a number, or per element for learned variances. */
function noiseStd(variance: DdpmVariance, abar: number, abarPrev: number, learned: F32 | undefined) {
  const beta = f32(1 - f32(abar / abarPrev));
  const posterior = Math.max(f32(f32(f32(1 - abarPrev) / f32(1 - abar)) * beta), 1e-20);
  switch (variance) {
    case "fixed_small":
      return sqrt32(posterior);
    case "fixed_small_log":
      return f32(Math.exp(f32(0.5 * log32(posterior))));
    case "fixed_large":
      return sqrt32(beta);
    case "learned":
    case "learned_range": {
      if (!learned)
        throw new Error(`DDPM variance '${variance}' needs a network that also outputs its variance`);
      if (variance === "learned") return (v: number) => sqrt32(v);
      const minLog = log32(posterior);
      const maxLog = log32(beta);
      return (v: number) => {
        const frac = f32(f32(v + 1) / 2);
        return f32(Math.exp(f32(0.5 * f32(f32(frac * maxLog) + f32(f32(1 - frac) * minLog)))));
      };
    }
  }
}

export async function ddpm(
  denoise: Denoiser,
  x: F32,
  steps: readonly AlphaBarStep[],
  options: DdpmOptions,
): Promise<F32> {
  const { noise, onStep } = options;
  const variance = options.variance ?? "fixed_small";
  for (let i = 0; i < steps.length; i++) {
    const { t, alphaBar, alphaBarPrev } = steps[i]!;
    const out = await denoise(x, vpLevel(alphaBar, t));
    const betaProd = f32(1 - alphaBar);
    const alphaStep = f32(alphaBar / alphaBarPrev);
    const betaStep = f32(1 - alphaStep);
    const x0Coeff = f32(f32(sqrt32(alphaBarPrev) * betaStep) / betaProd);
    const xCoeff = f32(f32(sqrt32(alphaStep) * f32(1 - alphaBarPrev)) / betaProd);
    x = zip(out.x0, x, (x0i, xi) => f32(x0Coeff * x0i) + f32(xCoeff * xi));
    if (t > 0) {
      const z = drawNoise(noise, x);
      const std = noiseStd(variance, alphaBar, alphaBarPrev, out.variance);
      if (typeof std === "number") x = zip(x, z, (xi, zi) => xi + f32(std * zi));
      else {
        const sd = zip(out.variance!, z, (v) => std(v));
        x = zip(x, z, (xi, zi, k) => xi + f32(sd.data[k]! * zi));
      }
    }
    await onStep?.({ i, t, x, x0: out.x0 });
  }
  return x;
}
