/**
 * The blocks of diffusers' UNet2DModel (the DDPM U-Net of Ho et al. 2020, App. B), as functions over
 * a parameter scope whose names are diffusers' state-dict names:
 *
 *   ResnetBlock2D    GN → SiLU → conv3×3 → (+ time, if any) → GN → SiLU → dropout → conv3×3, plus a shortcut
 *   attention        GN → per-head softmax(QKᵀ/√d)V → to_out.0, plus the input (diffusers' Attention
 *                    as UNet2D uses it: residual_connection, rescale_output_factor)
 *   Downsample2D     conv3×3 stride 2 (padding 0: pad right/bottom by one first)
 *   Upsample2D       nearest ×2, then conv3×3
 *   Down/AttnDown    L × (resnet [→ attention]), then downsample; every output is kept as a skip
 *   Up/AttnUp        (L+1) × (concat(h, skip) → resnet [→ attention]), then upsample
 *   UNetMidBlock2D   resnet → [attention] → resnet
 *
 * The down and up blocks take their attention as a function (`BlockAttention`), so the same blocks
 * serve UNet2DConditionModel, whose CrossAttn blocks put a Transformer2DModel after each resnet.
 */
import { silu } from "../../nn/activations.ts";
import { spatialSelfAttention } from "../../nn/attention.ts";
import { conv2d, linear } from "../../nn/linear.ts";
import { groupNorm } from "../../nn/norm.ts";
import { upsampleNearest } from "../../nn/resample.ts";
import * as o from "../../tensor/ops.ts";
import type { ParamScope } from "../../tensor/params.ts";
import type { Tensor } from "../../tensor/symbolic.ts";

/** What every resnet of one U-Net shares. */
export interface BlockContext {
  /**
   * SiLU of the time (+ class) embedding [N, T]: every resnet projects it (computed once). null for
   * networks without a time embedding (the VAE's encoder and decoder: diffusers' temb_channels=None,
   * so the resnets have no time_emb_proj and norm2 sees h alone).
   */
  readonly tembAct: Tensor | null;
  readonly groups: number;
  readonly eps: number;
  /** "default": GN(h + proj(temb)); "scale_shift": GN(h)·(1 + scale) + shift (improved DDPM). */
  readonly timeShift: "default" | "scale_shift";
  /** Dropout inside resnets: the identity at inference (see `UNetForwardOptions`). */
  readonly dropout: (x: Tensor) => Tensor;
}

/** Mean over each 2×2 window (nn.AvgPool2d(2, 2); an odd last row or column is dropped). */
function avgPool2(x: Tensor): Tensor {
  const [n, c, h, w] = x.shape as [number, number, number, number];
  const even = o.slice(o.slice(x, 2, 0, h - (h % 2)), 3, 0, w - (w % 2));
  const win = o.reshape(even, [n, c, h >> 1, 2, w >> 1, 2]); // [N, C, H/2, 2, W/2, 2]
  return o.mean(win, [3, 5]); // [N, C, H/2, W/2]
}

export interface ResnetOptions {
  /** Divides the output (diffusers' output_scale_factor). */
  readonly scale?: number;
  /** Resample inside the block, after the first norm (diffusers' up=True / down=True). */
  readonly resample?: "up" | "down";
}

/** ResnetBlock2D: x [N, Cin, H, W] → [N, cout, H', W']. */
export function resnetBlock2D(
  p: ParamScope,
  x: Tensor,
  cout: number,
  ctx: BlockContext,
  opts: ResnetOptions = {},
): Tensor {
  const cin = x.shape[1]!;
  let h = silu(groupNorm(p.sub("norm1"), x, ctx.groups, ctx.eps));
  if (opts.resample === "up") {
    x = upsampleNearest(x); // [N, Cin, 2H, 2W]
    h = upsampleNearest(h);
  } else if (opts.resample === "down") {
    x = avgPool2(x); // [N, Cin, H/2, W/2]
    h = avgPool2(h);
  }
  h = conv2d(p.sub("conv1"), h, cout, 3, { padding: 1 }); // [N, cout, H', W']
  if (ctx.tembAct === null) {
    if (ctx.timeShift === "scale_shift") throw new Error("resnetBlock2D: scale_shift needs a time embedding");
    h = groupNorm(p.sub("norm2"), h, ctx.groups, ctx.eps);
  } else {
    const projWidth = ctx.timeShift === "scale_shift" ? 2 * cout : cout;
    const t = linear(p.sub("time_emb_proj"), ctx.tembAct, projWidth); // [N, cout or 2·cout]
    const tt = o.reshape(t, [t.shape[0]!, projWidth, 1, 1]); // [N, cout or 2·cout, 1, 1]
    if (ctx.timeShift === "scale_shift") {
      const [scale, shift] = o.split(tt, 1, 2) as [Tensor, Tensor]; // [N, cout, 1, 1] each
      h = o.add(o.mul(groupNorm(p.sub("norm2"), h, ctx.groups, ctx.eps), o.add(scale, 1)), shift);
    } else {
      h = groupNorm(p.sub("norm2"), o.add(h, tt), ctx.groups, ctx.eps);
    }
  }
  h = conv2d(p.sub("conv2"), ctx.dropout(silu(h)), cout, 3, { padding: 1 });
  const skip = cin !== cout ? conv2d(p.sub("conv_shortcut"), x, cout, 1) : x; // [N, cout, H', W']
  const out = o.add(skip, h);
  return opts.scale !== undefined && opts.scale !== 1 ? o.div(out, opts.scale) : out;
}

export interface AttentionBlockOptions {
  /** Channels per head; heads = ⌊C / headDim⌋ (integer division, as diffusers). */
  readonly headDim: number;
  /** GroupNorm groups, or null for no norm (diffusers' mid block with scale_shift). */
  readonly groups: number | null;
  readonly eps: number;
  /** Divides the output (diffusers' rescale_output_factor). */
  readonly scale?: number;
}

/** Spatial self-attention over the H·W positions with a residual: x [N, C, H, W] → same. */
export function attentionBlock(p: ParamScope, x: Tensor, opts: AttentionBlockOptions): Tensor {
  const [n, c, h, w] = x.shape as [number, number, number, number];
  const heads = Math.floor(c / opts.headDim);
  if (heads < 1) {
    throw new Error(`attention: head width ${opts.headDim} exceeds the ${c} channels; use at most ${c}`);
  }
  let seq = o.reshape(x, [n, c, h * w]); // [N, C, L]
  if (opts.groups !== null) seq = groupNorm(p.sub("group_norm"), seq, opts.groups, opts.eps);
  const y = spatialSelfAttention(p, o.reshape(seq, [n, c, h, w]), { heads, headDim: opts.headDim });
  const out = o.add(y, x); // [N, C, H, W]
  return opts.scale !== undefined && opts.scale !== 1 ? o.div(out, opts.scale) : out;
}

/** Downsample2D with a conv: [N, C, H, W] → [N, C, H/2, W/2]. */
export function downsample2D(p: ParamScope, x: Tensor, padding: number): Tensor {
  const c = x.shape[1]!;
  if (padding === 0) x = o.pad(x, [0, 0, 0, 0, 0, 0, 1, 1]); // [N, C, H+1, W+1]
  return conv2d(p.sub("conv"), x, c, 3, { stride: 2, padding });
}

/** Upsample2D with a conv: [N, C, H, W] → [N, C, 2H, 2W]. */
export function upsample2D(p: ParamScope, x: Tensor): Tensor {
  return conv2d(p.sub("conv"), upsampleNearest(x), x.shape[1]!, 3, { padding: 1 });
}

/** The attention a block applies after each resnet, over the scope `attentions.<i>`: [N, C, H, W] → same. */
export type BlockAttention = (p: ParamScope, h: Tensor) => Tensor;

/** `attentionBlock` with fixed options, as a block's attention (AttnDownBlock2D, AttnUpBlock2D). */
export const spatialAttention =
  (opts: AttentionBlockOptions): BlockAttention =>
  (p, h) =>
    attentionBlock(p, h, opts);

export interface DownBlockOptions {
  readonly cout: number;
  readonly layers: number;
  /** Attention after each resnet (AttnDownBlock2D, CrossAttnDownBlock2D), or null (DownBlock2D). */
  readonly attention: BlockAttention | null;
  /** null in the last block. */
  readonly downsample: "conv" | "resnet" | null;
  readonly padding: number;
}

/** DownBlock2D / AttnDownBlock2D: h [N, Cin, H, W] → h [N, cout, H/2, W/2] and the skips. */
export function downBlock2D(
  p: ParamScope,
  h: Tensor,
  ctx: BlockContext,
  b: DownBlockOptions,
): { h: Tensor; skips: Tensor[] } {
  const skips: Tensor[] = [];
  for (let i = 0; i < b.layers; i++) {
    h = resnetBlock2D(p.sub("resnets").sub(i), h, b.cout, ctx); // [N, cout, H, W]
    if (b.attention) h = b.attention(p.sub("attentions").sub(i), h);
    skips.push(h);
  }
  const down = p.sub("downsamplers").sub(0);
  if (b.downsample === "conv")
    h = downsample2D(down, h, b.padding); // [N, cout, H/2, W/2]
  else if (b.downsample === "resnet") h = resnetBlock2D(down, h, b.cout, ctx, { resample: "down" });
  if (b.downsample !== null) skips.push(h);
  return { h, skips };
}

export interface UpBlockOptions {
  readonly cout: number;
  /** layers_per_block + 1 */
  readonly layers: number;
  readonly attention: BlockAttention | null;
  /** null in the last block. */
  readonly upsample: "conv" | "resnet" | null;
}

/** UpBlock2D / AttnUpBlock2D: h [N, Cprev, H, W] and `layers` skips (used last first) → [N, cout, 2H, 2W]. */
export function upBlock2D(
  p: ParamScope,
  h: Tensor,
  skips: readonly Tensor[],
  ctx: BlockContext,
  b: UpBlockOptions,
): Tensor {
  for (let i = 0; i < b.layers; i++) {
    const skip = skips[skips.length - 1 - i]!;
    h = o.concat([h, skip], 1); // [N, C + Cskip, H, W]
    h = resnetBlock2D(p.sub("resnets").sub(i), h, b.cout, ctx); // [N, cout, H, W]
    if (b.attention) h = b.attention(p.sub("attentions").sub(i), h);
  }
  const up = p.sub("upsamplers").sub(0);
  if (b.upsample === "conv")
    h = upsample2D(up, h); // [N, cout, 2H, 2W]
  else if (b.upsample === "resnet") h = resnetBlock2D(up, h, b.cout, ctx, { resample: "up" });
  return h;
}

/** UNetMidBlock2D (one layer): resnet → [attention] → resnet, each output divided by `scale`. */
export function midBlock2D(
  p: ParamScope,
  h: Tensor,
  ctx: BlockContext,
  attention: AttentionBlockOptions | null,
  scale: number,
): Tensor {
  const c = h.shape[1]!;
  h = resnetBlock2D(p.sub("resnets").sub(0), h, c, ctx, { scale });
  if (attention) h = attentionBlock(p.sub("attentions").sub(0), h, { ...attention, scale });
  return resnetBlock2D(p.sub("resnets").sub(1), h, c, ctx, { scale });
}
