/**
 * Heun's second-order method on the probability-flow ODE dx/dσ = (x − x̂0)/σ (Karras et al. 2022,
 * Alg. 1; k-diffusion's `sample_heun`): an Euler step to σ_{i+1}, then a second evaluation there and the
 * average of the two slopes. The step onto σ = 0 stays first order. Each network evaluation is one
 * reported step, as in diffusers' HeunDiscreteScheduler (2N − 1 evaluations for N steps), whose float32
 * arithmetic order is kept.
 */

import { type F32, f32, zip, zip3 } from "../diffusion/float32.ts";
import { type Denoiser, veLevel } from "../diffusion/parameterization.ts";
import type { SamplerOptions, SigmaLevel } from "./types.ts";

/** The ODE slope (x − x̂0)/σ. */
function slope(x: F32, x0: F32, sigma: number): F32 {
  return zip(x, x0, (xi, x0i) => f32(xi - x0i) / sigma);
}

export async function heun(
  denoise: Denoiser,
  x: F32,
  ladder: readonly SigmaLevel[],
  options: SamplerOptions = {},
) {
  const { onStep } = options;
  let evaluation = 0;
  for (let i = 0; i < ladder.length - 1; i++) {
    const { sigma, t } = ladder[i]!;
    const next = ladder[i + 1]!;
    const { x0 } = await denoise(x, veLevel(sigma, t));
    const d = slope(x, x0, sigma);
    const dt = f32(next.sigma - sigma);
    const euler = zip(x, d, (xi, di) => xi + f32(di * dt));
    await onStep?.({ i: evaluation++, t, x: euler, x0 });
    if (next.sigma === 0) {
      x = euler;
      continue;
    }
    // Heun's correction: the slope at the Euler point, averaged with the first.
    const { x0: x0Next } = await denoise(euler, veLevel(next.sigma, next.t));
    const dNext = slope(euler, x0Next, next.sigma);
    x = zip3(x, d, dNext, (xi, a, b) => xi + f32(f32(f32(a + b) / 2) * dt));
    await onStep?.({ i: evaluation++, t: next.t, x, x0: x0Next });
  }
  return x;
}
