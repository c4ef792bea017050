/** Fully connected and convolution layers with PyTorch's layouts, names and default initialization. */
import * as o from "../tensor/ops.ts";
import { init, type ParamScope } from "../tensor/params.ts";
import type { Tensor } from "../tensor/symbolic.ts";

export interface LinearOptions {
  bias?: boolean;
}

/** y = x Wᵀ + b over the last axis; weight [out, in] as nn.Linear. */
export function linear(p: ParamScope, x: Tensor, outFeatures: number, opts: LinearOptions = {}): Tensor {
  const inFeatures = x.shape[x.rank - 1]!;
  const w = p.param("weight", [outFeatures, inFeatures], init.torchDefault(inFeatures));
  let y = o.matmul(x, o.transpose(w, [1, 0])); // [..., out]
  if (opts.bias ?? true) y = o.add(y, p.param("bias", [outFeatures], init.torchDefault(inFeatures)));
  return y;
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
