/** Fully connected and convolution layers with PyTorch's layouts, names and default initialization. */
import * as o from "../tensor/ops.ts";
import { type Init, init, type ParamScope } from "../tensor/params.ts";
import type { Tensor } from "../tensor/symbolic.ts";
import { adaptedWeight } from "./lora.ts";

/** How a layer's weights start, when not PyTorch's default (DiT's xavier and zero inits, zero convolutions). */
export interface LayerInit {
  weight?: Init;
  bias?: Init;
}

export interface LinearOptions {
  bias?: boolean;
  init?: LayerInit;
}

/**
 * nn.Linear's parameters: weight [out, in] and (unless `bias` is false) bias [out], PyTorch's init.
 * The weight is the one the layer uses: with the scope's LoRA adapters added (nn/lora.ts).
 */
export function linearParams(
  p: ParamScope,
  inFeatures: number,
  outFeatures: number,
  opts: LinearOptions = {},
): { weight: Tensor; bias: Tensor | undefined } {
  const dflt = init.torchDefault(inFeatures);
  const weight = adaptedWeight(p, p.param("weight", [outFeatures, inFeatures], opts.init?.weight ?? dflt));
  const bias = (opts.bias ?? true) ? p.param("bias", [outFeatures], opts.init?.bias ?? dflt) : undefined;
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
  init?: LayerInit;
}

/** nn.Conv2d: weight [out, in/groups, k, k] (with the scope's LoRA adapters added), bias [out]. */
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
  const dflt = init.torchDefault(fanIn);
  const declared = p.param(
    "weight",
    [outChannels, inChannels / groups, kernel, kernel],
    opts.init?.weight ?? dflt,
  );
  if (groups !== 1 && p.loraSites(declared.shape).length > 0)
    throw new Error(
      `LoRA on ${p.path}: grouped convolutions (groups ${groups}) take no adapter; leave the layer out of the targets`,
    );
  const w = adaptedWeight(p, declared);
  const b = (opts.bias ?? true) ? p.param("bias", [outChannels], opts.init?.bias ?? dflt) : undefined;
  return o.conv2d(x, w, b, {
    stride: opts.stride ?? 1,
    padding: opts.padding ?? 0,
    dilation: opts.dilation ?? 1,
    groups,
  });
}
