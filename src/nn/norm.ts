/**
 * Normalization layers composed from primitives: GroupNorm (Wu & He 2018), LayerNorm (Ba et al.
 * 2016) and RMSNorm (Zhang & Sennrich 2019), with nn.GroupNorm / nn.LayerNorm / nn.RMSNorm parameter
 * names (weight, bias).
 */
import * as o from "../tensor/ops.ts";
import { init, type ParamScope } from "../tensor/params.ts";
import type { Tensor } from "../tensor/symbolic.ts";

/**
 * Normalizes `x` over `axes` to zero mean and unit (biased) variance. Trailing axes (the case of
 * group and layer norm) use the fused `standardize` primitive: one LayerNormalization pass forward
 * and a short gradient; other axes are composed from reductions.
 */
export function standardize(x: Tensor, axes: readonly number[], eps: number): Tensor {
  const sorted = axes.map((a) => (a < 0 ? a + x.rank : a)).sort((p, q) => p - q);
  if (sorted.length > 0 && sorted.every((a, i) => a === x.rank - sorted.length + i)) {
    return o.standardize(x, sorted[0]!, eps);
  }
  const mu = o.mean(x, axes, true);
  const xc = o.sub(x, mu);
  const variance = o.mean(o.square(xc), axes, true);
  return o.mul(xc, o.rsqrt(o.add(variance, eps)));
}

/** GroupNorm over [N, C, ...]: statistics per sample and group of C/groups channels, then a per-channel affine. */
export function groupNorm(p: ParamScope, x: Tensor, groups: number, eps = 1e-5, affine = true): Tensor {
  const [n, c] = x.shape as [number, number];
  if (c % groups !== 0) throw new Error(`groupNorm: ${c} channels are not divisible into ${groups} groups`);
  const grouped = o.reshape(x, [n, groups, -1]); // [N, G, C/G·H·W]
  const y = o.reshape(standardize(grouped, [2], eps), x.shape); // [N, C, H, W]
  if (!affine) return y;
  const bshape = [1, c, ...x.shape.slice(2).map(() => 1)];
  const w = o.reshape(p.param("weight", [c], init.ones()), bshape);
  const b = o.reshape(p.param("bias", [c], init.zeros()), bshape);
  return o.add(o.mul(y, w), b);
}

/** LayerNorm over the last axis. */
export function layerNorm(p: ParamScope, x: Tensor, eps = 1e-5, affine = true): Tensor {
  const d = x.shape[x.rank - 1]!;
  const y = standardize(x, [x.rank - 1], eps);
  if (!affine) return y;
  return o.add(o.mul(y, p.param("weight", [d], init.ones())), p.param("bias", [d], init.zeros()));
}

/**
 * RMSNorm over the last axis: x / √(mean(x²) + eps), then a per-channel weight (diffusers' RMSNorm,
 * e.g. SD3.5's query-key norm over each head's channels). No mean is subtracted and there is no bias.
 */
export function rmsNorm(p: ParamScope, x: Tensor, eps = 1e-6, affine = true): Tensor {
  const d = x.shape[x.rank - 1]!;
  const y = o.mul(x, o.rsqrt(o.add(o.mean(o.square(x), [x.rank - 1], true), eps)));
  return affine ? o.mul(y, p.param("weight", [d], init.ones())) : y;
}
