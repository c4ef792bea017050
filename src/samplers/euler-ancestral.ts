/**
 * Euler ancestral sampling (k-diffusion's `sample_euler_ancestral`, after Song et al. 2021's ancestral
 * sampler): each step from σ to σ_next is split into a deterministic Euler step down to
 * σ_down = √(σ_next² − σ_up²) and fresh noise of std σ_up = √(σ_next²(σ² − σ_next²)/σ²), so the marginal
 * at σ_next is right while the trajectory forgets part of its past.
 *
 * x lives on the variance-exploding path. Float32 arithmetic in diffusers' order
 * (EulerAncestralDiscreteScheduler.step; noise is drawn on every step, the last included).
 */

import { type F32, f32, sqrt32, zip } from "../diffusion/float32.ts";
import { type Denoiser, veLevel } from "../diffusion/parameterization.ts";
import { drawNoise, type SigmaLevel, type StochasticOptions } from "./types.ts";

/** σ_up and σ_down of an ancestral step from σ to σ_next. */
export function ancestralSigmas(sigma: number, sigmaNext: number): { up: number; down: number } {
  const from2 = f32(sigma * sigma);
  const to2 = f32(sigmaNext * sigmaNext);
  const up = sqrt32(f32(f32(to2 * f32(from2 - to2)) / from2));
  const down = sqrt32(f32(to2 - f32(up * up)));
  return { up, down };
}

export async function eulerAncestral(
  denoise: Denoiser,
  x: F32,
  ladder: readonly SigmaLevel[],
  options: StochasticOptions,
): Promise<F32> {
  const { noise, onStep } = options;
  for (let i = 0; i < ladder.length - 1; i++) {
    const { sigma, t } = ladder[i]!;
    const { x0 } = await denoise(x, veLevel(sigma, t));
    const { up, down } = ancestralSigmas(sigma, ladder[i + 1]!.sigma);
    const dt = f32(down - sigma);
    const stepped = zip(x, x0, (xi, x0i) => xi + f32(f32(f32(xi - x0i) / sigma) * dt));
    const z = drawNoise(noise, x);
    x = zip(stepped, z, (xi, zi) => xi + f32(zi * up));
    await onStep?.({ i, t, x, x0 });
  }
  return x;
}
