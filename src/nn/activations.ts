/** Activations: SiLU (Elfwing et al. 2017) and GELU (Hendrycks & Gimpel 2016), exact and tanh forms. */
import * as o from "../tensor/ops.ts";
import type { Tensor } from "../tensor/symbolic.ts";

/** x·σ(x) */
export const silu = (x: Tensor): Tensor => o.silu(x);

/** x·Φ(x) = ½x(1 + erf(x/√2)), one primitive (a fused kernel whose gradient reads x alone). */
export const gelu = (x: Tensor): Tensor => o.gelu(x);

/** ½x(1 + tanh(√(2/π)(x + 0.044715x³))), one primitive (a fused kernel; its gradient is composed). */
export const geluTanh = (x: Tensor): Tensor => o.geluTanh(x);

export const relu = (x: Tensor): Tensor => o.maximum(x, 0);
