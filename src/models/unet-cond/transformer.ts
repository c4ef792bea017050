/**
 * diffusers' Transformer2DModel on continuous inputs, as Stable Diffusion's U-Net uses it after each
 * resnet of a CrossAttn block (Rombach et al. 2022, §3.3: "cross-attention … to the intermediate
 * layers of the UNet"), as a function over a parameter scope whose names are diffusers' state-dict names:
 *
 *   x [N, C, H, W] → GroupNorm(eps 1e-6) → proj_in (1×1 conv, or Linear on the tokens) → tokens [N, HW, D]
 *   each BasicTransformerBlock (pre-norm, LayerNorm eps 1e-5):
 *     h += attn1(LN₁(h))                      self-attention over the HW positions
 *     h += attn2(LN₂(h), context)             cross-attention to the text tokens [N, L, cross_dim]
 *     h += ff(LN₃(h))                         GEGLU: (a, g) = split(h W₀ + b₀); (a · GELU(g)) W₂ + b₂
 *   → proj_out → [N, C, H, W], plus x
 *
 * D = heads · ⌊C / heads⌋. The attention projections to_q/to_k/to_v have no bias (attention_bias
 * false), to_out.0 has one; the feed-forward is 4·D wide. Every layer starts as PyTorch's default.
 */
import { gelu } from "../../nn/activations.ts";
import { multiHeadAttention } from "../../nn/attention.ts";
import { conv2d, linear } from "../../nn/linear.ts";
import { groupNorm, layerNorm } from "../../nn/norm.ts";
import * as o from "../../tensor/ops.ts";
import type { ParamScope } from "../../tensor/params.ts";
import type { Tensor } from "../../tensor/symbolic.ts";

export interface Transformer2DOptions {
  readonly heads: number;
  /** BasicTransformerBlocks (transformer_layers_per_block). */
  readonly layers: number;
  /** Groups of the input GroupNorm (the U-Net's norm_num_groups). */
  readonly groups: number;
  /** proj_in / proj_out as Linear layers on the tokens (use_linear_projection) instead of 1×1 convs. */
  readonly linearProjection: boolean;
  /** The tokens cross-attention reads: encoder_hidden_states [N, L, cross_attention_dim]. */
  readonly context: Tensor;
  /** Dropout after each attention and inside the feed-forward: the identity at inference. */
  readonly dropout: (x: Tensor) => Tensor;
}

/** GEGLU feed-forward (Shazeer 2020): [N, L, D] → [N, L, D] through 4·D gated units. */
function feedForward(p: ParamScope, x: Tensor, dropout: (x: Tensor) => Tensor): Tensor {
  const d = x.shape[x.rank - 1]!;
  const inner = 4 * d;
  const proj = linear(p.sub("net").sub(0).sub("proj"), x, 2 * inner); // [N, L, 2·inner]
  const [hidden, gate] = o.split(proj, x.rank - 1, 2) as [Tensor, Tensor]; // [N, L, inner] each
  return linear(p.sub("net").sub(2), dropout(o.mul(hidden, gelu(gate))), d); // [N, L, D]
}

/** BasicTransformerBlock (layer_norm, self- then cross-attention, GEGLU): h [N, HW, D] → same. */
export function basicTransformerBlock(
  p: ParamScope,
  h: Tensor,
  heads: number,
  context: Tensor,
  dropout: (x: Tensor) => Tensor,
): Tensor {
  const d = h.shape[2]!;
  const attn = { heads, headDim: d / heads, qkvBias: false, outBias: true };
  const self = multiHeadAttention(p.sub("attn1"), layerNorm(p.sub("norm1"), h), attn); // [N, HW, D]
  h = o.add(dropout(self), h);
  const cross = multiHeadAttention(p.sub("attn2"), layerNorm(p.sub("norm2"), h), { ...attn, context }); // [N, HW, D]
  h = o.add(dropout(cross), h);
  return o.add(feedForward(p.sub("ff"), layerNorm(p.sub("norm3"), h), dropout), h); // [N, HW, D]
}

/** Transformer2DModel over x [N, C, H, W] with a residual → [N, C, H, W]. */
export function transformer2D(p: ParamScope, x: Tensor, opts: Transformer2DOptions): Tensor {
  const [n, c, h, w] = x.shape as [number, number, number, number];
  const inner = opts.heads * Math.floor(c / opts.heads);
  if (inner < 1)
    throw new Error(`transformer2D: ${opts.heads} heads exceed the ${c} channels; use at most ${c}`);
  const ctx = opts.context;
  if (ctx.rank !== 3 || ctx.shape[0] !== n) {
    throw new Error(`transformer2D: the context must be [${n}, L, D], got [${ctx.shape.join(", ")}]`);
  }
  const toTokens = (t: Tensor) => o.transpose(o.reshape(t, [n, t.shape[1]!, h * w]), [0, 2, 1]); // [N, HW, ·]
  const toImage = (t: Tensor) => o.reshape(o.transpose(t, [0, 2, 1]), [n, t.shape[2]!, h, w]); // [N, ·, H, W]

  const normed = groupNorm(p.sub("norm"), x, opts.groups, 1e-6); // [N, C, H, W]
  let tokens = opts.linearProjection
    ? linear(p.sub("proj_in"), toTokens(normed), inner) // [N, HW, D]
    : toTokens(conv2d(p.sub("proj_in"), normed, inner, 1)); // [N, HW, D]
  for (let l = 0; l < opts.layers; l++) {
    tokens = basicTransformerBlock(p.sub("transformer_blocks").sub(l), tokens, opts.heads, ctx, opts.dropout);
  }
  const out = opts.linearProjection
    ? toImage(linear(p.sub("proj_out"), tokens, c)) // [N, C, H, W]
    : conv2d(p.sub("proj_out"), toImage(tokens), c, 1); // [N, C, H, W]
  return o.add(out, x);
}
