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

const zeros: { weight: Init; bias: Init } = { weight: init.zeros(), bias: init.zeros() };
const xavier = (fanIn: number, fanOut: number) => ({
  weight: init.xavierUniform(fanIn, fanOut),
  bias: init.zeros(),
});
const small = { weight: init.normal(0.02), bias: init.zeros() };

/** timestep [N] + labels [N] → the block's conditioning vector [N, D] (CombinedTimestepLabelEmbeddings). */
function conditioningEmbedding(p: ParamScope, cfg: DiTConfig, t: Tensor, labels: Tensor): Tensor {
  const d = innerDim(cfg);
  const feats = timestepEmbedding(t, TIME_FEATURES, { flipSinToCos: true, freqShift: 1 }); // [N, 256]
  const mlp = p.sub("timestep_embedder");
  const temb = linear(mlp.sub("linear_2"), silu(linear(mlp.sub("linear_1"), feats, d, { init: small })), d, {
    init: small,
  }); // [N, D]
  const table = p.sub("class_embedder").sub("embedding_table");
  const cemb = embedding(table, labels, cfg.numEmbedsAdaNorm + 1, d, init.normal(0.02)); // [N, D]
  return o.add(temb, cemb);
}

/** x·(1 + scale) + shift, with scale and shift [N, D] broadcast over the tokens of x [N, L, D]. */
function modulate(x: Tensor, shift: Tensor, scale: Tensor): Tensor {
  const [n, d] = shift.shape as [number, number];
  return o.add(o.mul(x, o.add(o.reshape(scale, [n, 1, d]), 1)), o.reshape(shift, [n, 1, d]));
}

/** gate [N, D] · y [N, L, D] */
const gated = (gate: Tensor, y: Tensor): Tensor =>
  o.mul(o.reshape(gate, [gate.shape[0]!, 1, gate.shape[1]!]), y);

function block(p: ParamScope, cfg: DiTConfig, h: Tensor, c: Tensor): Tensor {
  const d = innerDim(cfg);
  const mod = linear(p.sub("norm1").sub("linear"), silu(c), 6 * d, { init: zeros }); // [N, 6D]
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
    init: xavier(d, d),
  }); // [N, L, D]
  h = o.add(h, gated(gateMsa, attn));
  const f = modulate(layerNorm(p, h, cfg.normEps, false), shiftMlp, scaleMlp); // [N, L, D]
  const ff = p.sub("ff").sub("net");
  const act = cfg.activationFn === "gelu-approximate" ? geluTanh : gelu;
  const hidden = act(linear(ff.sub(0).sub("proj"), f, 4 * d, { init: xavier(d, 4 * d) })); // [N, L, 4D]
  return o.add(h, gated(gateMlp, linear(ff.sub(2), hidden, d, { init: xavier(4 * d, d) }))); // [N, L, D]
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

  const fanIn = cin * ps * ps;
  const patches = conv2d(p.sub("pos_embed").sub("proj"), sample, d, ps, {
    stride: ps,
    init: xavier(fanIn, d),
  }); // [N, D, h, w]
  const pos = sample.graph.constant(positionEmbedding(d, h, w, cfg.sampleSize / ps)); // [1, L, D]
  let x = o.add(o.transpose(o.reshape(patches, [n, d, h * w]), [0, 2, 1]), pos); // [N, L, D]

  const blocks = p.sub("transformer_blocks");
  let first: Tensor | undefined;
  for (let i = 0; i < cfg.numLayers; i++) {
    const c = conditioningEmbedding(blocks.sub(i).sub("norm1").sub("emb"), cfg, t, labels); // [N, D]
    first ??= c;
    x = block(blocks.sub(i), cfg, x, c); // [N, L, D]
  }

  const [shift, scale] = o.split(linear(p.sub("proj_out_1"), silu(first!), 2 * d, { init: zeros }), 1, 2) as [
    Tensor,
    Tensor,
  ];
  x = modulate(layerNorm(p, x, 1e-6, false), shift, scale); // [N, L, D]
  x = linear(p.sub("proj_out_2"), x, ps * ps * cout, { init: zeros }); // [N, L, p·p·C]
  x = o.reshape(x, [n, h, w, ps, ps, cout]);
  x = o.transpose(x, [0, 5, 1, 3, 2, 4]); // [N, C, h, p, w, p]
  return o.reshape(x, [n, cout, hgt, wid]); // [N, C_out, H, W]
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
