/** Activations: SiLU (Elfwing et al. 2017) and GELU (Hendrycks & Gimpel 2016), exact and tanh forms. */
import * as o from "../tensor/ops.ts";
import type { Tensor } from "../tensor/symbolic.ts";

/** x·σ(x) */
export const silu = (x: Tensor): Tensor => o.silu(x);

/** x·Φ(x) = ½x(1 + erf(x/√2)) */
export const gelu = (x: Tensor): Tensor => o.mul(o.mul(x, 0.5), o.add(o.erf(o.mul(x, Math.SQRT1_2)), 1));

/** ½x(1 + tanh(√(2/π)(x + 0.044715x³))) */
export function geluTanh(x: Tensor): Tensor {
  const inner = o.mul(o.add(x, o.mul(o.mul(o.square(x), x), 0.044715)), Math.sqrt(2 / Math.PI));
  return o.mul(o.mul(x, 0.5), o.add(o.tanh(inner), 1));
}

export const relu = (x: Tensor): Tensor => o.maximum(x, 0);
