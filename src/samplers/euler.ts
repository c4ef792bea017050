/**
 * Euler's method on the probability-flow ODE dx/dσ = (x − x̂0)/σ (Karras et al. 2022, Alg. 2 without
 * the second-order correction; k-diffusion's `sample_euler`), with optional "churn": before each step
 * the noise level is raised from σ to σ̂ = σ(1 + γ) by adding fresh noise of std √(σ̂² − σ²).
 *
 * x lives on the variance-exploding path x = x0 + σ·ε. The same ODE and update hold on the
 * rectified-flow path, which `flowMatchEuler` uses. Float32 arithmetic in diffusers' order
 * (EulerDiscreteScheduler.step).
 */

import { type F32, f32, sqrt32, zip } from "../diffusion/float32.ts";
import { type Denoiser, veLevel } from "../diffusion/parameterization.ts";
import { drawNoise, type NoiseFn, type SamplerOptions, type SigmaLevel } from "./types.ts";

export interface Churn {
  /** S_churn: total churn, spread over the steps (γ = min(S_churn/N, √2 − 1)). */
  sChurn: number;
  /** Churn only where S_tmin ≤ σ ≤ S_tmax. */
  sTmin?: number;
  sTmax?: number;
  /** S_noise: scale of the added noise. */
  sNoise?: number;
  /**
   * The network's timestep at the raised level σ̂ (default: the ladder's timestep of σ, as diffusers
   * passes it).
   */
  timestep?: (sigmaHat: number) => number;
}

export interface EulerOptions extends SamplerOptions {
  churn?: Churn;
  /** Needed only with churn. */
  noise?: NoiseFn;
}

/** One Euler step from σ to σ_next given x̂0: x + (x − x̂0)/σ · (σ_next − σ). */
export function eulerStep(x: F32, x0: F32, sigma: number, sigmaNext: number): F32 {
  const dt = f32(sigmaNext - sigma);
  return zip(x, x0, (xi, x0i) => xi + f32(f32(f32(xi - x0i) / sigma) * dt));
}

export async function euler(
  denoise: Denoiser,
  x: F32,
  ladder: readonly SigmaLevel[],
  options: EulerOptions = {},
) {
  const { churn, onStep } = options;
  const n = ladder.length - 1;
  for (let i = 0; i < n; i++) {
    const { sigma, t } = ladder[i]!;
    let sigmaHat = sigma;
    let tHat = t;
    if (churn && churn.sChurn > 0 && sigma >= (churn.sTmin ?? 0) && sigma <= (churn.sTmax ?? Infinity)) {
      const gamma = Math.min(churn.sChurn / n, Math.SQRT2 - 1);
      if (!options.noise) throw new Error("euler: churn adds noise; pass options.noise");
      sigmaHat = f32(sigma * f32(gamma + 1));
      const z = drawNoise(options.noise, x);
      const std = sqrt32(f32(f32(sigmaHat * sigmaHat) - f32(sigma * sigma)));
      const sNoise = f32(churn.sNoise ?? 1);
      x = zip(x, z, (xi, zi) => xi + f32(f32(zi * sNoise) * std));
      if (churn.timestep) tHat = churn.timestep(sigmaHat);
    }
    const { x0 } = await denoise(x, veLevel(sigmaHat, tHat));
    x = eulerStep(x, x0, sigmaHat, ladder[i + 1]!.sigma);
    await onStep?.({ i, t, x, x0 });
  }
  return x;
}
