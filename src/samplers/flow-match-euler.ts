/**
 * Euler sampling of a rectified flow (Liu et al. 2023; Lipman et al. 2023; as in SD3, Esser et al. 2024):
 * on the path x_s = (1 − s)·x0 + s·ε the velocity is dx/ds = ε − x0 = (x − x̂0)/s, so each step is
 * x ← x + (s_next − s)·u. A flow network's own velocity u is used as it gives it (bit-exact with
 * diffusers' FlowMatchEulerDiscreteScheduler); for other denoisers u = (x − x̂0)/s, the same update as
 * `euler` on the VE path. With `stochastic`, each step instead re-noises the prediction:
 * x ← (1 − s_next)·x̂0 + s_next·z (diffusers' `stochastic_sampling`).
 */

import { type F32, f32, zip } from "../diffusion/float32.ts";
import { type Denoiser, flowLevel } from "../diffusion/parameterization.ts";
import { eulerStep } from "./euler.ts";
import { drawNoise, type NoiseFn, type SamplerOptions, type SigmaLevel } from "./types.ts";

export interface FlowMatchEulerOptions extends SamplerOptions {
  stochastic?: boolean;
  /** Needed only when stochastic. */
  noise?: NoiseFn;
}

export async function flowMatchEuler(
  denoise: Denoiser,
  x: F32,
  ladder: readonly SigmaLevel[],
  options: FlowMatchEulerOptions = {},
): Promise<F32> {
  const { onStep, stochastic, noise } = options;
  for (let i = 0; i < ladder.length - 1; i++) {
    const { sigma: s, t } = ladder[i]!;
    const sNext = ladder[i + 1]!.sigma;
    const { x0, eps, velocity } = await denoise(x, flowLevel(s, t));
    if (stochastic) {
      if (!noise) throw new Error("flowMatchEuler: stochastic sampling draws noise; pass options.noise");
      const z = drawNoise(noise, x);
      const keep = f32(1 - sNext);
      x = zip(x0, z, (a, b) => f32(keep * a) + f32(sNext * b));
    } else if (velocity) {
      // The network's own velocity: x + (s_next − s)·u.
      const dt = f32(sNext - s);
      x = zip(x, velocity, (xi, u) => xi + f32(dt * u));
    } else if (s > 0) {
      x = eulerStep(x, x0, s, sNext);
    } else {
      // At s = 0 the slope (x − x̂0)/s is 0/0; the velocity ε̂ − x̂0 is its limit.
      const dt = f32(sNext - s);
      const u = zip(eps, x0, (e, a) => e - a);
      x = zip(x, u, (xi, ui) => xi + f32(dt * ui));
    }
    await onStep?.({ i, t, x, x0 });
  }
  return x;
}
