/**
 * The DiT forward pass (Peebles & Xie 2023, "Scalable Diffusion Models with Transformers"; diffusers'
 * `DiTTransformer2DModel`) as a function over a parameter scope: `dit(scope, cfg, x, t, labels)`.
 *
 *   x [N, C, H, W] → patchify (conv p×p, stride p) + 2-D sincos positions → tokens [N, L, D]
 *   each block:  c = MLP(sinusoidal(t)) + table[label]                       (the block's own embedder)
 *                (shift, scale, gate)×2 = Linear(SiLU(c))                     (adaLN-Zero)
 *                h += gate₁ · Attn(LN(h)·(1 + scale₁) + shift₁)
 *                h += gate₂ · MLP(LN(h)·(1 + scale₂) + shift₂)
 *   out: LN(h)·(1 + scale) + shift (from block 0's embedder) → Linear → unpatchify [N, C_out, H, W]
 *
 * Initialization follows the DiT paper: xavier-uniform linears with zero biases, N(0, 0.02) label
 * table and timestep MLP, and zero for every adaLN modulation and the final linear — so a fresh
 * model outputs exactly 0 and each block starts as the identity ("adaLN-Zero").
 */
import { gelu, geluTanh, silu } from "../../nn/activations.ts";
import { multiHeadAttention } from "../../nn/attention.ts";
import { embedding, timestepEmbedding } from "../../nn/embedding.ts";
import { conv2d, linear } from "../../nn/linear.ts";
import { layerNorm } from "../../nn/norm.ts";
import { HostTensor } from "../../tensor/host.ts";
import * as o from "../../tensor/ops.ts";
import { type Init, init, ParamScope, type ParamSpec } from "../../tensor/params.ts";
import { Graph, type Tensor } from "../../tensor/symbolic.ts";
import { type DiTConfig, innerDim, outChannelsOf } from "./config.ts";

/** The sinusoidal timestep features each block's embedder starts from. */
const TIME_FEATURES = 256;

/**
 * diffusers' 2-D sincos position embedding for an h×w grid of patches (row-major tokens), with
 * positions scaled to the base grid (`base` patches per side; interpolation scale 1): the first half
 * of the channels encodes the column, the second the row; each half is [sin(pos·ω), cos(pos·ω)] with
 * ω_i = 10000^(−i/(D/4)). Float64 on the host, rounded to float32 once. Returns [1, h·w, D].
 */
export function positionEmbedding(dim: number, h: number, w: number, base: number): HostTensor<"float32"> {
  const quarter = dim / 4;
  const omega = Array.from({ length: quarter }, (_, i) => 1 / 10000 ** (i / quarter));
  const out = new Float32Array(h * w * dim);
  for (let r = 0; r < h; r++) {
    for (let c = 0; c < w; c++) {
      const at = (r * w + c) * dim;
      // grid coordinates as diffusers computes them, in float32: arange(n) / (n / base)
      const y = Math.fround(Math.fround(r) / Math.fround(h / base));
      const x = Math.fround(Math.fround(c) / Math.fround(w / base));
      for (let i = 0; i < quarter; i++) {
        out[at + i] = Math.sin(x * omega[i]!);
        out[at + quarter + i] = Math.cos(x * omega[i]!);
        out[at + 2 * quarter + i] = Math.sin(y * omega[i]!);
        out[at + 3 * quarter + i] = Math.cos(y * omega[i]!);
      }
    }
  }
  return new HostTensor(out, [1, h * w, dim]);
}

/** Zero weight and bias: adaLN-Zero modulations and the final layer. */
export const zeroInit: { weight: Init; bias: Init } = { weight: init.zeros(), bias: init.zeros() };
/** Xavier-uniform weight, zero bias: the transformer's linears. */
export const xavierInit = (fanIn: number, fanOut: number) => ({
  weight: init.xavierUniform(fanIn, fanOut),
  bias: init.zeros(),
});
/** N(0, 0.02) weight, zero bias: the conditioning embedders. */
export const smallInit = { weight: init.normal(0.02), bias: init.zeros() };

/** x [N, in] → linear_2(SiLU(linear_1(x))) [N, dim]: diffusers' TimestepEmbedding (and SD3's pooled-text projection). */
export function embedderMlp(p: ParamScope, x: Tensor, dim: number): Tensor {
  return linear(p.sub("linear_2"), silu(linear(p.sub("linear_1"), x, dim, { init: smallInit })), dim, {
    init: smallInit,
  }); // [N, dim]
}

/** t [N] → MLP(sinusoidal(t)) [N, dim]: 256 sinusoidal features (cos first) with diffusers' downscale_freq_shift. */
export function timestepEmbedder(p: ParamScope, t: Tensor, dim: number, freqShift: number): Tensor {
  const feats = timestepEmbedding(t, TIME_FEATURES, { flipSinToCos: true, freqShift }); // [N, 256]
  return embedderMlp(p, feats, dim); // [N, dim]
}

/** timestep [N] + labels [N] → the block's conditioning vector [N, D] (CombinedTimestepLabelEmbeddings). */
function conditioningEmbedding(p: ParamScope, cfg: DiTConfig, t: Tensor, labels: Tensor): Tensor {
  const d = innerDim(cfg);
  const temb = timestepEmbedder(p.sub("timestep_embedder"), t, d, 1); // [N, D]
  const table = p.sub("class_embedder").sub("embedding_table");
  const cemb = embedding(table, labels, cfg.numEmbedsAdaNorm + 1, d, init.normal(0.02)); // [N, D]
  return o.add(temb, cemb);
}

/** x·(1 + scale) + shift, with scale and shift [N, D] broadcast over the tokens of x [N, L, D]. */
export function modulate(x: Tensor, shift: Tensor, scale: Tensor): Tensor {
  const [n, d] = shift.shape as [number, number];
  return o.add(o.mul(x, o.add(o.reshape(scale, [n, 1, d]), 1)), o.reshape(shift, [n, 1, d]));
}

/** gate [N, D] · y [N, L, D] */
export const gated = (gate: Tensor, y: Tensor): Tensor =>
  o.mul(o.reshape(gate, [gate.shape[0]!, 1, gate.shape[1]!]), y);

/** The transformer MLP (diffusers' FeedForward, `net.0.proj` and `net.2`): x [N, L, D] → Linear(4D) → act → Linear(D). */
export function feedForward(p: ParamScope, x: Tensor, act: (x: Tensor) => Tensor): Tensor {
  const d = x.shape[x.rank - 1]!;
  const net = p.sub("net");
  const hidden = act(linear(net.sub(0).sub("proj"), x, 4 * d, { init: xavierInit(d, 4 * d) })); // [N, L, 4D]
  return linear(net.sub(2), hidden, d, { init: xavierInit(4 * d, d) }); // [N, L, D]
}

/** x [N, C, H, W] → p×p patches as tokens [N, (H/p)·(W/p), D], row-major (PatchEmbed's stride-p conv `proj`). */
export function patchTokens(p: ParamScope, x: Tensor, dim: number, patch: number): Tensor {
  const [n, cin] = x.shape as [number, number];
  const patches = conv2d(p.sub("proj"), x, dim, patch, {
    stride: patch,
    init: xavierInit(cin * patch * patch, dim),
  }); // [N, D, h, w]
  const [, , h, w] = patches.shape as [number, number, number, number];
  return o.transpose(o.reshape(patches, [n, dim, h * w]), [0, 2, 1]); // [N, L, D]
}

/** tokens [N, h·w, p·p·C] → [N, C, h·p, w·p] (diffusers' einsum "nhwpqc->nchpwq"). */
export function unpatchify(x: Tensor, h: number, w: number, patch: number, channels: number): Tensor {
  const n = x.shape[0]!;
  const y = o.reshape(x, [n, h, w, patch, patch, channels]);
  return o.reshape(o.transpose(y, [0, 5, 1, 3, 2, 4]), [n, channels, h * patch, w * patch]); // [N, C, H, W]
}

function block(p: ParamScope, cfg: DiTConfig, h: Tensor, c: Tensor): Tensor {
  const d = innerDim(cfg);
  const mod = linear(p.sub("norm1").sub("linear"), silu(c), 6 * d, { init: zeroInit }); // [N, 6D]
  const [shiftMsa, scaleMsa, gateMsa, shiftMlp, scaleMlp, gateMlp] = o.split(mod, 1, 6) as [
    Tensor,
    Tensor,
    Tensor,
    Tensor,
    Tensor,
    Tensor,
  ];
  const a = modulate(layerNorm(p, h, 1e-6, false), shiftMsa, scaleMsa); // [N, L, D]
  const attn = multiHeadAttention(p.sub("attn1"), a, {
    heads: cfg.numAttentionHeads,
    headDim: cfg.attentionHeadDim,
    qkvBias: cfg.attentionBias,
    outBias: true,
    init: xavierInit(d, d),
  }); // [N, L, D]
  h = o.add(h, gated(gateMsa, attn));
  const f = modulate(layerNorm(p, h, cfg.normEps, false), shiftMlp, scaleMlp); // [N, L, D]
  const act = cfg.activationFn === "gelu-approximate" ? geluTanh : gelu;
  return o.add(h, gated(gateMlp, feedForward(p.sub("ff"), f, act))); // [N, L, D]
}

/**
 * The forward pass. sample [N, in_channels, H, W] (H = W, a multiple of patch_size); timesteps float32
 * [N] (or [1], broadcast); labels int64 [N] in 0..num_embeds_ada_norm (the last is "no class").
 * Returns [N, out_channels, H, W].
 */
export function dit(
  p: ParamScope,
  cfg: DiTConfig,
  sample: Tensor,
  timesteps: Tensor,
  labels: Tensor,
): Tensor {
  const [n, cin, hgt, wid] = sample.shape as [number, number, number, number];
  const ps = cfg.patchSize;
  if (sample.rank !== 4 || cin !== cfg.inChannels) {
    throw new Error(`dit: sample must be [N, ${cfg.inChannels}, H, W], got [${sample.shape.join(", ")}]`);
  }
  if (hgt !== wid || hgt % ps !== 0) {
    throw new Error(`dit: height and width must be equal multiples of patch_size ${ps}, got ${hgt}×${wid}`);
  }
  const d = innerDim(cfg);
  const cout = outChannelsOf(cfg);
  const [h, w] = [hgt / ps, wid / ps];
  const t = o.expand(o.reshape(o.cast(timesteps, "float32"), [-1]), [n]); // [N]

  const pos = sample.graph.constant(positionEmbedding(d, h, w, cfg.sampleSize / ps)); // [1, L, D]
  let x = o.add(patchTokens(p.sub("pos_embed"), sample, d, ps), pos); // [N, L, D]

  const blocks = p.sub("transformer_blocks");
  let first: Tensor | undefined;
  for (let i = 0; i < cfg.numLayers; i++) {
    const c = conditioningEmbedding(blocks.sub(i).sub("norm1").sub("emb"), cfg, t, labels); // [N, D]
    first ??= c;
    x = block(blocks.sub(i), cfg, x, c); // [N, L, D]
  }

  const [shift, scale] = o.split(
    linear(p.sub("proj_out_1"), silu(first!), 2 * d, { init: zeroInit }),
    1,
    2,
  ) as [Tensor, Tensor];
  x = modulate(layerNorm(p, x, 1e-6, false), shift, scale); // [N, L, D]
  x = linear(p.sub("proj_out_2"), x, ps * ps * cout, { init: zeroInit }); // [N, L, p·p·C]
  return unpatchify(x, h, w, ps, cout); // [N, C_out, H, W]
}

/** Every parameter (name, shape, DiT's initialization), in diffusers' state-dict order. */
export function ditParamSpecs(cfg: DiTConfig): ParamSpec[] {
  const graph = new Graph();
  const side = cfg.sampleSize;
  const scope = ParamScope.root(graph);
  dit(
    scope,
    cfg,
    graph.input("sample", [1, cfg.inChannels, side, side]),
    graph.input("timestep", [1]),
    graph.input("class_labels", [1], "int64"),
  );
  return scope.specs;
}
