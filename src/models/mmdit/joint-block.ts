/**
 * The MM-DiT block (Esser et al. 2024, §4; diffusers' `JointTransformerBlock` with its
 * `JointAttnProcessor2_0`): image tokens x and text tokens c keep their own weights — QKV, output
 * projection, MLP, adaLN-Zero modulation — but attend jointly, over the concatenated sequence:
 *
 *   (shift, scale, gate)×2 = Linear(SiLU(y)) per stream             (adaLN-Zero, y: time + pooled text)
 *   q, k, v = [W_x·mod(LN(x)) ; W_c·mod(LN(c))]                       (per stream, then concatenated)
 *   [a_x ; a_c] = softmax(q kᵀ / √d) v                                 (one attention over both)
 *   x += gate·Out_x(a_x);  x += gate·MLP_x(mod(LN(x)))                 (and likewise for c)
 *
 * SD3.5's options: `qk_norm` "rms_norm" normalizes each head's queries and keys (RMSNorm over the
 * head's channels, one weight per stream), and a dual-attention block (SD3.5 Medium) adds an
 * image-only self-attention `attn2` on the same normalized x with its own (shift, scale, gate) —
 * its adaLN makes 9 vectors instead of 6. The last block is `context_pre_only`: its text tokens are
 * keys and values only (no text output, no text MLP), and its text modulation is AdaLayerNormContinuous.
 */
import { geluTanh, silu } from "../../nn/activations.ts";
import { mergeHeads, scaledDotProductAttention, splitHeads } from "../../nn/attention.ts";
import { linear, linearParams } from "../../nn/linear.ts";
import { layerNorm, rmsNorm } from "../../nn/norm.ts";
import * as o from "../../tensor/ops.ts";
import { init, type ParamScope } from "../../tensor/params.ts";
import type { Tensor } from "../../tensor/symbolic.ts";
import { feedForward, gated, modulate, xavierInit, zeroInit } from "../dit/dit.ts";

/** The layer norm every modulation starts from (no affine, eps 1e-6). */
const EPS = 1e-6;
const norm = (p: ParamScope, x: Tensor): Tensor => layerNorm(p, x, EPS, false);

export interface JointAttentionOptions {
  readonly heads: number;
  readonly headDim: number;
  readonly qkNorm: boolean;
  /** Text tokens are keys and values only: no text queries are needed and there is no text output. */
  readonly contextPreOnly: boolean;
}

/** Names of one stream's projections in diffusers' Attention module. */
interface StreamNames {
  readonly q: string;
  readonly k: string;
  readonly v: string;
  readonly normQ: string;
  readonly normK: string;
}
const IMAGE: StreamNames = { q: "to_q", k: "to_k", v: "to_v", normQ: "norm_q", normK: "norm_k" };
const TEXT: StreamNames = {
  q: "add_q_proj",
  k: "add_k_proj",
  v: "add_v_proj",
  normQ: "norm_added_q",
  normK: "norm_added_k",
};

/** y = x Wᵀ + b with a layer's declared parameters. */
function dense(lin: { weight: Tensor; bias: Tensor | undefined }, x: Tensor): Tensor {
  const y = o.matmul(x, o.transpose(lin.weight, [1, 0]));
  return lin.bias ? o.add(y, lin.bias) : y;
}

/**
 * Joint attention: image tokens x [N, Lx, D] with (optional) text tokens c [N, Lc, D] → the image
 * output [N, Lx, D] and the text output [N, Lc, D] (absent when context_pre_only or without text).
 * Without text it is the plain self-attention of `attn2`. Parameters are declared in diffusers'
 * state-dict order (norm_q, norm_k, to_q, to_k, to_v, add_k_proj, add_v_proj, add_q_proj, to_out.0,
 * to_add_out, norm_added_q, norm_added_k), which is not the order they are applied in.
 */
export function jointAttention(
  p: ParamScope,
  x: Tensor,
  c: Tensor | undefined,
  opts: JointAttentionOptions,
): { x: Tensor; c?: Tensor } {
  const d = x.shape[2]!;
  const { heads, headDim } = opts;
  const inner = heads * headDim;
  const lin = { init: xavierInit(d, inner) };
  const headNorm = (names: StreamNames) => {
    if (!opts.qkNorm) return;
    p.sub(names.normQ).param("weight", [headDim], init.ones());
    p.sub(names.normK).param("weight", [headDim], init.ones());
  };
  const project = (t: Tensor, name: string) => splitHeads(linear(p.sub(name), t, inner, lin), heads); // [N, H, L, d]
  const normed = (t: Tensor, name: string) => (opts.qkNorm ? rmsNorm(p.sub(name), t, EPS) : t);

  headNorm(IMAGE);
  let q = normed(project(x, IMAGE.q), IMAGE.normQ); // [N, H, Lx, d]
  let k = normed(project(x, IMAGE.k), IMAGE.normK);
  let v = project(x, IMAGE.v);
  let ck: Tensor | undefined;
  let cv: Tensor | undefined;
  let cq: Tensor | undefined;
  if (c) {
    ck = project(c, TEXT.k); // [N, H, Lc, d]
    cv = project(c, TEXT.v);
    // context_pre_only: the text queries' outputs are dropped, so they are not computed (same result)
    if (opts.contextPreOnly) linearParams(p.sub(TEXT.q), d, inner, lin);
    else cq = project(c, TEXT.q);
  }
  const outX = linearParams(p.sub("to_out").sub(0), inner, d, { init: xavierInit(inner, d) });
  const outC =
    c && !opts.contextPreOnly
      ? linearParams(p.sub("to_add_out"), inner, d, { init: xavierInit(inner, d) })
      : undefined;
  if (!c) return { x: dense(outX, mergeHeads(scaledDotProductAttention(q, k, v))) };

  headNorm(TEXT);
  k = o.concat([k, normed(ck!, TEXT.normK)], 2); // [N, H, Lx + Lc, d]
  v = o.concat([v, cv!], 2);
  if (cq) q = o.concat([q, normed(cq, TEXT.normQ)], 2); // [N, H, Lx (+ Lc), d]
  const a = mergeHeads(scaledDotProductAttention(q, k, v)); // [N, Lx (+ Lc), inner]
  const lx = x.shape[1]!;
  if (!outC) return { x: dense(outX, a) };
  const [ax, ac] = o.split(a, 1, [lx, a.shape[1]! - lx]) as [Tensor, Tensor];
  return { x: dense(outX, ax), c: dense(outC, ac) }; // [N, Lx, D], [N, Lc, D]
}

export interface JointBlockOptions {
  readonly heads: number;
  readonly headDim: number;
  readonly qkNorm: boolean;
  readonly contextPreOnly: boolean;
  /** SD3.5's second, image-only attention (`attn2`). */
  readonly dualAttention: boolean;
}

/**
 * One block: x [N, Lx, D] (image tokens), c [N, Lc, D] (text tokens), y [N, D] (time + pooled text)
 * → the new x, and the new c unless the block is context_pre_only.
 */
export function jointBlock(
  p: ParamScope,
  x: Tensor,
  c: Tensor,
  y: Tensor,
  opts: JointBlockOptions,
): { x: Tensor; c?: Tensor } {
  const d = x.shape[2]!;
  const sy = silu(y);
  const chunks = opts.dualAttention ? 9 : 6;
  const mod = o.split(linear(p.sub("norm1").sub("linear"), sy, chunks * d, { init: zeroInit }), 1, chunks); // chunks × [N, D]
  const [shiftMsa, scaleMsa, gateMsa, shiftMlp, scaleMlp, gateMlp] = mod as [
    Tensor,
    Tensor,
    Tensor,
    Tensor,
    Tensor,
    Tensor,
  ];
  const xn = norm(p, x); // [N, Lx, D]

  // the text stream's modulation: adaLN-Zero, or in the last block AdaLayerNormContinuous (scale first)
  const cmod = o.split(
    linear(p.sub("norm1_context").sub("linear"), sy, (opts.contextPreOnly ? 2 : 6) * d, { init: zeroInit }),
    1,
    opts.contextPreOnly ? 2 : 6,
  ); // [N, D] each
  const cn = opts.contextPreOnly
    ? modulate(norm(p, c), cmod[1]!, cmod[0]!)
    : modulate(norm(p, c), cmod[0]!, cmod[1]!); // [N, Lc, D]

  const attnOpts = { heads: opts.heads, headDim: opts.headDim, qkNorm: opts.qkNorm };
  const attn = jointAttention(p.sub("attn"), modulate(xn, shiftMsa, scaleMsa), cn, {
    ...attnOpts,
    contextPreOnly: opts.contextPreOnly,
  });
  x = o.add(x, gated(gateMsa, attn.x)); // [N, Lx, D]
  if (opts.dualAttention) {
    const [shift2, scale2, gate2] = mod.slice(6) as [Tensor, Tensor, Tensor];
    const attn2 = jointAttention(p.sub("attn2"), modulate(xn, shift2, scale2), undefined, {
      ...attnOpts,
      contextPreOnly: false,
    });
    x = o.add(x, gated(gate2, attn2.x));
  }
  x = o.add(x, gated(gateMlp, feedForward(p.sub("ff"), modulate(norm(p, x), shiftMlp, scaleMlp), geluTanh)));
  if (opts.contextPreOnly) return { x };

  const [, , cGateMsa, cShiftMlp, cScaleMlp, cGateMlp] = cmod as [
    Tensor,
    Tensor,
    Tensor,
    Tensor,
    Tensor,
    Tensor,
  ];
  c = o.add(c, gated(cGateMsa, attn.c!)); // [N, Lc, D]
  const cf = feedForward(p.sub("ff_context"), modulate(norm(p, c), cShiftMlp, cScaleMlp), geluTanh);
  return { x, c: o.add(c, gated(cGateMlp, cf)) };
}
