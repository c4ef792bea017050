/**
 * Multistep sampling of a latent consistency model (Luo et al. 2023, "Latent Consistency Models",
 * Alg. 3; Song et al. 2023's multistep consistency sampling). The consistency function is
 *   f(x_t) = c_skip(t)·x_t + c_out(t)·x̂0,  c_skip = σ_d²/((κt)² + σ_d²),  c_out = κt/√((κt)² + σ_d²),
 * with σ_d = 0.5 and timestep scaling κ (the boundary condition f(x_0) = x_0); between steps the estimate
 * is re-noised to the next timestep: x_prev = √ᾱ_prev·f + √(1 − ᾱ_prev)·z. The last step returns f.
 *
 * x lives on the variance-preserving path; float32 arithmetic in diffusers' order (LCMScheduler.step).
 */

import { type F32, f32, sqrt32, zip } from "../diffusion/float32.ts";
import { type Denoiser, vpLevel } from "../diffusion/parameterization.ts";
import { type AlphaBarStep, drawNoise, type StochasticOptions } from "./types.ts";

export interface LcmOptions extends StochasticOptions {
  /** κ, the timestep scaling of the boundary condition (default 10). */
  timestepScaling?: number;
}

/** c_skip and c_out of the consistency boundary condition at timestep t. */
export function lcmScalings(t: number, timestepScaling = 10): { cSkip: number; cOut: number } {
  const sigmaData2 = 0.25;
  const scaled = f32(t * f32(timestepScaling));
  const denom = f32(f32(scaled * scaled) + sigmaData2);
  return { cSkip: f32(sigmaData2 / denom), cOut: f32(scaled / sqrt32(denom)) };
}

export async function lcm(
  denoise: Denoiser,
  x: F32,
  steps: readonly AlphaBarStep[],
  options: LcmOptions,
): Promise<F32> {
  const { noise, onStep } = options;
  for (let i = 0; i < steps.length; i++) {
    const { t, alphaBar, alphaBarPrev } = steps[i]!;
    const { x0: predicted } = await denoise(x, vpLevel(alphaBar, t));
    const { cSkip, cOut } = lcmScalings(t, options.timestepScaling);
    const denoised = zip(predicted, x, (p, xi) => f32(cOut * p) + f32(cSkip * xi));
    if (i < steps.length - 1) {
      const z = drawNoise(noise, x);
      const a = sqrt32(alphaBarPrev);
      const b = sqrt32(f32(1 - alphaBarPrev));
      x = zip(denoised, z, (d, zi) => f32(a * d) + f32(b * zi));
    } else {
      x = denoised;
    }
    await onStep?.({ i, t, x, x0: denoised });
  }
  return x;
}
