/**
 * The forward (noising) process and the regression targets built from it.
 *
 * q(x_t | x0) = N(√ᾱ_t·x0, (1 − ᾱ_t)·I) (Ho et al. 2020, eq. 4), so x_t = √ᾱ_t·x0 + √(1 − ᾱ_t)·ε in
 * closed form; the velocity target is v = √ᾱ_t·ε − √(1 − ᾱ_t)·x0 (Salimans & Ho 2022, §4); rectified flow
 * interpolates x_s = (1 − s)·x0 + s·ε and regresses u = ε − x0 (Lipman et al. 2023; Liu et al. 2023).
 *
 * Per-sample values (one per item of the batch, dimension 0) are broadcast over the other dimensions.
 * Arithmetic is float32 in diffusers' order (its `add_noise` and `get_velocity`).
 */

import { type F32, f32, sqrt32, zip } from "./float32.ts";

function perSample(x: F32, values: number | readonly number[], what: string): (i: number) => number {
  const n = x.shape[0] ?? 1;
  const per = x.size / Math.max(n, 1);
  if (typeof values === "number") return () => values;
  if (values.length !== n) {
    throw new Error(`${what}: got ${values.length} values for a batch of ${n}; pass one per sample`);
  }
  return (i) => values[Math.floor(i / per)]!;
}

/** x_t = √ᾱ·x0 + √(1 − ᾱ)·ε with ᾱ per sample (or one for all). */
export function addNoise(x0: F32, eps: F32, alphaBar: number | readonly number[]): F32 {
  const abar = perSample(x0, alphaBar, "addNoise");
  return zip(x0, eps, (x, e, i) => {
    const a = abar(i);
    return f32(sqrt32(a) * x) + f32(sqrt32(f32(1 - a)) * e);
  });
}

/** The v-prediction target v = √ᾱ·ε − √(1 − ᾱ)·x0. */
export function velocity(x0: F32, eps: F32, alphaBar: number | readonly number[]): F32 {
  const abar = perSample(x0, alphaBar, "velocity");
  return zip(x0, eps, (x, e, i) => {
    const a = abar(i);
    return f32(sqrt32(a) * e) - f32(sqrt32(f32(1 - a)) * x);
  });
}

/** The rectified-flow interpolant x_s = (1 − s)·x0 + s·ε with s ∈ [0, 1] per sample. */
export function addFlowNoise(x0: F32, eps: F32, s: number | readonly number[]): F32 {
  const sv = perSample(x0, s, "addFlowNoise");
  return zip(x0, eps, (x, e, i) => {
    const si = sv(i);
    return f32(f32(1 - si) * x) + f32(si * e);
  });
}

/** The flow-matching target u = ε − x0 (the velocity dx_s/ds). */
export function flowVelocity(x0: F32, eps: F32): F32 {
  return zip(x0, eps, (x, e) => e - x);
}
