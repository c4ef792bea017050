/** Losses: mean squared error, optionally weighted per sample (min-SNR and other weightings). */
import * as o from "../tensor/ops.ts";
import type { Tensor } from "../tensor/symbolic.ts";

/** mean((a − b)²) over all elements. */
export const mse = (a: Tensor, b: Tensor): Tensor => o.mean(o.square(o.sub(a, b)));

/** Per-sample mean of (a − b)² over all axes but the first: [N, ...] → [N]. */
export function msePerSample(a: Tensor, b: Tensor): Tensor {
  const d = o.square(o.sub(a, b));
  return o.mean(
    d,
    d.shape.map((_, i) => i).filter((i) => i > 0),
  );
}

/** Σ wᵢ·mseᵢ / N with per-sample weights w [N]. */
export function weightedMse(a: Tensor, b: Tensor, w: Tensor): Tensor {
  return o.mean(o.mul(msePerSample(a, b), w));
}
