/** Fully connected and convolution layers with PyTorch's layouts, names and default initialization. */
import * as o from "../tensor/ops.ts";
import { init, type ParamScope } from "../tensor/params.ts";
import type { Tensor } from "../tensor/symbolic.ts";

export interface LinearOptions {
  bias?: boolean;
}

/** nn.Linear's parameters: weight [out, in] and (unless `bias` is false) bias [out], PyTorch's init. */
export function linearParams(
  p: ParamScope,
  inFeatures: number,
  outFeatures: number,
  opts: LinearOptions = {},
): { weight: Tensor; bias: Tensor | undefined } {
  const weight = p.param("weight", [outFeatures, inFeatures], init.torchDefault(inFeatures));
  const bias =
    (opts.bias ?? true) ? p.param("bias", [outFeatures], init.torchDefault(inFeatures)) : undefined;
  return { weight, bias };
}

/** y = x Wᵀ + b over the last axis; weight [out, in] as nn.Linear. */
export function linear(p: ParamScope, x: Tensor, outFeatures: number, opts: LinearOptions = {}): Tensor {
  const { weight, bias } = linearParams(p, x.shape[x.rank - 1]!, outFeatures, opts);
  const y = o.matmul(x, o.transpose(weight, [1, 0])); // [..., out]
  return bias ? o.add(y, bias) : y;
}

export interface Conv2dLayerOptions {
  stride?: number;
  padding?: number;
  dilation?: number;
  groups?: number;
  bias?: boolean;
}

/** nn.Conv2d: weight [out, in/groups, k, k], bias [out]. */
export function conv2d(
  p: ParamScope,
  x: Tensor,
  outChannels: number,
  kernel: number,
  opts: Conv2dLayerOptions = {},
): Tensor {
  const groups = opts.groups ?? 1;
  const inChannels = x.shape[1]!;
  const fanIn = (inChannels / groups) * kernel * kernel;
  const w = p.param("weight", [outChannels, inChannels / groups, kernel, kernel], init.torchDefault(fanIn));
  const b = (opts.bias ?? true) ? p.param("bias", [outChannels], init.torchDefault(fanIn)) : undefined;
  return o.conv2d(x, w, b, {
    stride: opts.stride ?? 1,
    padding: opts.padding ?? 0,
    dilation: opts.dilation ?? 1,
    groups,
  });
}
