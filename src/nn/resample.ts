/** Resampling: nearest-neighbour upsampling by an integer factor, composed from reshape and expand. */
import * as o from "../tensor/ops.ts";
import type { Tensor } from "../tensor/symbolic.ts";

/** [N, C, H, W] → [N, C, sH, sW], each pixel repeated s×s times (F.interpolate mode "nearest"). */
export function upsampleNearest(x: Tensor, s = 2): Tensor {
  const [n, c, h, w] = x.shape as [number, number, number, number];
  const grid = o.reshape(x, [n, c, h, 1, w, 1]);
  return o.reshape(o.expand(grid, [n, c, h, s, w, s]), [n, c, h * s, w * s]);
}
