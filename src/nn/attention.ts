/**
 * Multi-head scaled dot-product attention (Vaswani et al. 2017): softmax(QKᵀ/√d)V per head, for
 * self-attention (context = x) and cross-attention (context = text tokens, …). Projections are named
 * as diffusers' Attention module names them: to_q, to_k, to_v, to_out.0.
 */
import * as o from "../tensor/ops.ts";
import type { ParamScope } from "../tensor/params.ts";
import type { Tensor } from "../tensor/symbolic.ts";
import { type LayerInit, linear, linearParams } from "./linear.ts";

/** q [B, H, Lq, D], k [B, H, Lk, D], v [B, H, Lk, Dv] → [B, H, Lq, Dv]. */
export function scaledDotProductAttention(q: Tensor, k: Tensor, v: Tensor, scale?: number): Tensor {
  const d = q.shape[q.rank - 1]!;
  const s = scale ?? 1 / Math.sqrt(d);
  const scores = o.matmul(o.mul(q, s), o.transpose(k, [0, 1, 3, 2])); // [B, H, Lq, Lk]
  return o.matmul(o.softmax(scores, -1), v); // [B, H, Lq, Dv]
}

/** [B, L, H·D] → [B, H, L, D] */
export function splitHeads(x: Tensor, heads: number): Tensor {
  const [b, l, c] = x.shape as [number, number, number];
  return o.transpose(o.reshape(x, [b, l, heads, c / heads]), [0, 2, 1, 3]);
}

/** [B, H, L, D] → [B, L, H·D] */
export function mergeHeads(x: Tensor): Tensor {
  const [b, h, l, d] = x.shape as [number, number, number, number];
  return o.reshape(o.transpose(x, [0, 2, 1, 3]), [b, l, h * d]);
}

export interface AttentionOptions {
  heads: number;
  /** Width of each head (default: channels / heads). */
  headDim?: number;
  /** Tokens to attend to (cross-attention); default: x itself. */
  context?: Tensor;
  /** Bias on the q/k/v projections (diffusers' `bias`, default true for UNet2D attention). */
  qkvBias?: boolean;
  outBias?: boolean;
  /** Initialization of the four projections (default: PyTorch's). */
  init?: LayerInit;
}

/**
 * Self-attention over the H·W positions of x [N, C, H, W] → [N, C, H, W], channels first: the
 * projections are 1×1 convolutions (the same to_q / to_k / to_v / to_out.0 Linear weights, [out, in])
 * and each head's queries, keys and values stay [d, H·W], so QᵀK and V·Pᵀ need no transposed copies
 * (ONNX Runtime folds the transposes into its matrix products). Same values as `multiHeadAttention`
 * on the [N, H·W, C] tokens; on the CPU the 1×1 convolutions run blocked like the rest of a U-Net.
 */
export function spatialSelfAttention(
  p: ParamScope,
  x: Tensor,
  opts: { heads: number; headDim: number; qkvBias?: boolean; outBias?: boolean },
): Tensor {
  const [n, c, h, w] = x.shape as [number, number, number, number];
  const inner = opts.heads * opts.headDim;
  // a Linear's weight [out, in] as a 1×1 convolution's [out, in, 1, 1]
  const proj = (scope: ParamScope, t: Tensor, out: number, bias: boolean): Tensor => {
    const inFeatures = t.shape[1]!;
    const lin = linearParams(scope, inFeatures, out, { bias });
    return o.conv2d(t, o.reshape(lin.weight, [out, inFeatures, 1, 1]), lin.bias);
  };
  const heads = (t: Tensor) => o.reshape(t, [n, opts.heads, opts.headDim, h * w]); // [N, H, D, L]
  const qkvBias = opts.qkvBias ?? true;
  const q = heads(proj(p.sub("to_q"), x, inner, qkvBias));
  const k = heads(proj(p.sub("to_k"), x, inner, qkvBias));
  const v = heads(proj(p.sub("to_v"), x, inner, qkvBias));
  const scores = o.matmul(o.transpose(o.mul(q, 1 / Math.sqrt(opts.headDim)), [0, 1, 3, 2]), k); // [N, H, L, L]
  const probs = o.softmax(scores, -1);
  const y = o.matmul(v, o.transpose(probs, [0, 1, 3, 2])); // [N, H, D, L]
  return proj(p.sub("to_out").sub(0), o.reshape(y, [n, inner, h, w]), c, opts.outBias ?? true);
}

/** x [B, L, C] → [B, L, C]: project, attend per head, merge, project out. */
export function multiHeadAttention(p: ParamScope, x: Tensor, opts: AttentionOptions): Tensor {
  const c = x.shape[2]!;
  const ctx = opts.context ?? x;
  const inner = opts.heads * (opts.headDim ?? c / opts.heads);
  if (!Number.isInteger(inner) || inner <= 0)
    throw new Error(`attention: ${c} channels do not split into ${opts.heads} heads`);
  const bias = { bias: opts.qkvBias ?? true, ...(opts.init ? { init: opts.init } : {}) };
  const q = splitHeads(linear(p.sub("to_q"), x, inner, bias), opts.heads); // [B, H, L, D]
  const k = splitHeads(linear(p.sub("to_k"), ctx, inner, bias), opts.heads); // [B, H, Lc, D]
  const v = splitHeads(linear(p.sub("to_v"), ctx, inner, bias), opts.heads); // [B, H, Lc, D]
  const y = mergeHeads(scaledDotProductAttention(q, k, v)); // [B, L, inner]
  return linear(p.sub("to_out").sub(0), y, c, {
    bias: opts.outBias ?? true,
    ...(opts.init ? { init: opts.init } : {}),
  }); // [B, L, C]
}
