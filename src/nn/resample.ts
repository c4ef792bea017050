/** Resampling: nearest-neighbour upsampling by an integer factor (one primitive: ONNX Resize). */
import * as o from "../tensor/ops.ts";
import type { Tensor } from "../tensor/symbolic.ts";

/** [N, C, H, W] → [N, C, sH, sW], each pixel repeated s×s times (F.interpolate mode "nearest"). */
export function upsampleNearest(x: Tensor, s = 2): Tensor {
  if (s === 1) return x;
  return o.upsampleNearest(x, s);
}
