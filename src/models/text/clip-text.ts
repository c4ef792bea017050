/**
 * The CLIP text encoder's forward pass (Radford et al. 2021, "Learning Transferable Visual Models From
 * Natural Language Supervision"; transformers' `CLIPTextTransformer`) as a function over a parameter
 * scope, with transformers' weight names under `text_model.`:
 *
 *   ids [N, L] → token_embedding[ids] + position_embedding[0..L)                    h₀ [N, L, D]
 *   each layer (pre-LayerNorm):  h += out_proj(softmax(q kᵀ/√d + causal [+ padding]) v)  on LN₁(h)
 *                                h += fc2(act(fc1(LN₂(h))))
 *   last = final_layer_norm(h_L);  pooled = last at the end-of-text token of each row
 *
 * The causal mask is −3.4·10³⁸ (float32's lowest, as transformers) above the diagonal; a padding mask
 * adds the same to the columns of padded keys. The pooled token is transformers' rule: when
 * `eos_token_id` is 2 (the original OpenAI configs) the first position of the largest id, otherwise
 * the first position holding `eos_token_id` (position 0 when there is none).
 *
 * Initialization is transformers' CLIP `_init_weights`, with f = initializer_factor, D = hidden_size,
 * n = num_hidden_layers: embeddings N(0, 0.02·f); q/k/v N(0, D^−½·(2n)^−½·f); out_proj N(0, D^−½·f);
 * fc1 N(0, (2D)^−½·f); fc2 N(0, D^−½·(2n)^−½·f); text_projection N(0, D^−½·f); biases 0; LayerNorms 1, 0.
 */
import { gelu as geluExact, geluTanh, relu, silu } from "../../nn/activations.ts";
import { linearParams } from "../../nn/linear.ts";
import { standardize } from "../../nn/norm.ts";
import { type DataOf, formatShape, HostTensor } from "../../tensor/host.ts";
import * as o from "../../tensor/ops.ts";
import { init, ParamScope, type ParamSpec } from "../../tensor/params.ts";
import { Graph, type Tensor } from "../../tensor/symbolic.ts";
import { type ClipActivation, type ClipTextConfig, headDim } from "./clip-text-config.ts";

/** float32's lowest value: transformers' masked attention score (torch.finfo(float32).min). */
export const MASKED_SCORE = -3.4028234663852886e38;

/** The MLP's activation by transformers' name. */
export function clipActivation(name: ClipActivation): (x: Tensor) => Tensor {
  switch (name) {
    case "quick_gelu":
      return (x) => o.mul(x, o.sigmoid(o.mul(x, 1.702))); // x·σ(1.702x)
    case "gelu":
      return geluExact;
    case "gelu_new":
    case "gelu_pytorch_tanh":
    case "gelu_fast":
      return geluTanh;
    case "relu":
      return relu;
    case "silu":
    case "swish":
      return silu;
  }
}

/** A Linear's parameters (weight [out, in], bias [out] = 0), the weight drawn from N(0, std). */
const linearOf = (p: ParamScope, inF: number, outF: number, std: number) =>
  linearParams(p, inF, outF, { init: { weight: init.normal(std), bias: init.zeros() } });

const apply = (x: Tensor, l: { weight: Tensor; bias: Tensor | undefined }): Tensor => {
  const y = o.matmul(x, o.transpose(l.weight, [1, 0])); // [..., out]
  return l.bias ? o.add(y, l.bias) : y;
};

/** nn.LayerNorm's parameters: weight 1, bias 0. */
function layerNormOf(p: ParamScope, d: number): (x: Tensor, eps: number) => Tensor {
  const weight = p.param("weight", [d], init.ones());
  const bias = p.param("bias", [d], init.zeros());
  return (x, eps) => o.add(o.mul(standardize(x, [x.rank - 1], eps), weight), bias);
}

/**
 * One pre-LayerNorm encoder layer (CLIPEncoderLayer): h [N, L, D] and the additive mask [·, 1, L, L] →
 * [N, L, D]. The parameters are declared in transformers' state-dict order (k, v, q, out, layer_norm1,
 * fc1, fc2, layer_norm2), so the specs list them as transformers saves them.
 */
function encoderLayer(p: ParamScope, c: ClipTextConfig, h: Tensor, mask: Tensor): Tensor {
  const [n, l, d] = h.shape as [number, number, number];
  const heads = c.numAttentionHeads;
  const hd = headDim(c);
  const f = c.initializerFactor;
  const inStd = d ** -0.5 * (2 * c.numHiddenLayers) ** -0.5 * f;
  const attn = p.sub("self_attn");
  const kProj = linearOf(attn.sub("k_proj"), d, d, inStd);
  const vProj = linearOf(attn.sub("v_proj"), d, d, inStd);
  const qProj = linearOf(attn.sub("q_proj"), d, d, inStd);
  const outProj = linearOf(attn.sub("out_proj"), d, d, d ** -0.5 * f);
  const norm1 = layerNormOf(p.sub("layer_norm1"), d);
  const mlp = p.sub("mlp");
  const fc1 = linearOf(mlp.sub("fc1"), d, c.intermediateSize, (2 * d) ** -0.5 * f);
  const fc2 = linearOf(mlp.sub("fc2"), c.intermediateSize, d, inStd);
  const norm2 = layerNormOf(p.sub("layer_norm2"), d);

  const split = (t: Tensor) => o.transpose(o.reshape(t, [n, l, heads, hd]), [0, 2, 1, 3]); // [N, H, L, d]
  const x = norm1(h, c.layerNormEps);
  const q = split(o.mul(apply(x, qProj), hd ** -0.5)); // scaled before the product, as transformers
  const k = split(apply(x, kProj));
  const v = split(apply(x, vProj));
  const scores = o.add(o.matmul(q, o.transpose(k, [0, 1, 3, 2])), mask); // [N, H, L, L]
  const y = o.matmul(o.softmax(scores, -1), v); // [N, H, L, d]
  const merged = o.reshape(o.transpose(y, [0, 2, 1, 3]), [n, l, d]); // [N, L, D]
  h = o.add(h, apply(merged, outProj));
  const act = clipActivation(c.hiddenAct);
  return o.add(h, apply(act(apply(norm2(h, c.layerNormEps), fc1)), fc2)); // [N, L, D]
}

/** The causal mask [1, 1, L, L]: 0 on and below the diagonal, float32's lowest above it. */
export function causalMask(l: number): HostTensor<"float32"> {
  const m = new Float32Array(l * l);
  for (let i = 0; i < l; i++) for (let j = i + 1; j < l; j++) m[i * l + j] = MASKED_SCORE;
  return new HostTensor(m, [1, 1, l, l]);
}

/**
 * The pooled token of each row as a one-hot float32 [N, L], computed in the graph from int64 ids
 * [N, L] by transformers' rule (see the file comment). With hit = [id is the target] and the rank
 * L − j of position j, the score hit·2L + (L − j) is largest at the first hit (or at 0 with none).
 */
export function poolOneHot(ids: Tensor, c: ClipTextConfig): Tensor {
  const [, l] = ids.shape as [number, number];
  const target = c.eosTokenId === 2 ? o.max(ids, 1, true) : c.eosTokenId; // [N, 1] or a scalar
  const hit = o.cast(o.equal(ids, target), "int64"); // [N, L]
  const rank = ids.graph.constant(
    HostTensor.int64(
      Array.from({ length: l }, (_, j) => l - j),
      [1, l],
    ),
  );
  const score = o.add(o.mul(hit, 2 * l), rank); // [N, L]
  return o.cast(o.equal(score, o.max(score, 1, true)), "float32"); // [N, L]
}

/** Picks one token state per row: by int64 positions [N] or one-hot float32 weights [N, L]. */
function pool(last: Tensor, by: Tensor): Tensor {
  const [n, l, d] = last.shape as [number, number, number];
  if (by.dtype === "int64" && by.rank === 1 && by.shape[0] === n) {
    const rowStart = last.graph.constant(
      HostTensor.int64(
        Array.from({ length: n }, (_, i) => i * l),
        [n],
      ),
    );
    return o.gather(o.reshape(last, [n * l, d]), o.add(by, rowStart)); // [N, D]
  }
  if (by.dtype === "float32" && by.rank === 2 && by.shape[0] === n && by.shape[1] === l) {
    return o.reshape(o.matmul(o.reshape(by, [n, 1, l]), last), [n, d]); // [N, D]
  }
  throw new Error(
    `clipTextForward: poolIndex must be int64 positions [${n}] or float32 one-hot weights [${n}, ${l}], got ${by.dtype} ${formatShape(by.shape)}`,
  );
}

export interface ClipTextForwardOptions {
  /** float32 [N, L]: 1 for tokens to attend to, 0 for padding (transformers' `attention_mask`). */
  readonly attentionMask?: Tensor;
  /**
   * Which token is pooled: int64 positions [N] (`poolPositions` on the host) or float32 one-hot
   * weights [N, L]. Default: computed in the graph from the ids (`poolOneHot`).
   */
  readonly poolIndex?: Tensor;
}

export interface ClipTextOutputs {
  /** [N, L, D]: the last layer's states after the final LayerNorm. */
  readonly lastHiddenState: Tensor;
  /** [N, D]: lastHiddenState at the pooled (end-of-text) token. */
  readonly pooled: Tensor;
  /**
   * numHiddenLayers + 1 tensors [N, L, D], as transformers' `hidden_states`: the embeddings, then each
   * layer's output, all before the final LayerNorm (so `hiddenStates.at(-2)` is SDXL's "penultimate").
   */
  readonly hiddenStates: readonly Tensor[];
}

/**
 * The text tower: int64 ids [N, L] (L ≤ max_position_embeddings) → token states, pooled states and
 * every layer's states. `scope` is the model's root: the weights are `text_model.…` under it.
 */
export function clipTextForward(
  scope: ParamScope,
  c: ClipTextConfig,
  inputIds: Tensor,
  opts: ClipTextForwardOptions = {},
): ClipTextOutputs {
  if (inputIds.rank !== 2 || inputIds.dtype !== "int64") {
    throw new Error(
      `clipTextForward: input ids must be int64 [N, L], got ${inputIds.dtype} ${formatShape(inputIds.shape)}`,
    );
  }
  const [n, l] = inputIds.shape as [number, number];
  if (l < 1 || l > c.maxPositionEmbeddings) {
    throw new Error(
      `clipTextForward: sequence length ${l} is outside 1..${c.maxPositionEmbeddings} (max_position_embeddings); truncate the ids`,
    );
  }
  const d = c.hiddenSize;
  const graph = inputIds.graph;
  const p = scope.sub("text_model");
  const emb = p.sub("embeddings");
  const std = 0.02 * c.initializerFactor;
  const tokens = emb.sub("token_embedding").param("weight", [c.vocabSize, d], init.normal(std));
  const positions = emb
    .sub("position_embedding")
    .param("weight", [c.maxPositionEmbeddings, d], init.normal(std));
  let h = o.add(o.gather(tokens, inputIds), o.slice(positions, 0, 0, l)); // [N, L, D]

  let mask = graph.constant(causalMask(l)); // [1, 1, L, L]
  if (opts.attentionMask) {
    const m = opts.attentionMask;
    if (m.dtype !== "float32" || m.rank !== 2 || m.shape[0] !== n || m.shape[1] !== l) {
      throw new Error(
        `clipTextForward: attentionMask must be float32 [${n}, ${l}] (1 keep, 0 padding), got ${m.dtype} ${formatShape(m.shape)}`,
      );
    }
    const padding = o.mul(o.sub(1, o.reshape(m, [n, 1, 1, l])), MASKED_SCORE); // [N, 1, 1, L]
    mask = o.add(mask, padding); // [N, 1, L, L]
  }

  const hiddenStates = [h];
  const layers = p.sub("encoder").sub("layers");
  for (let i = 0; i < c.numHiddenLayers; i++) {
    h = encoderLayer(layers.sub(i), c, h, mask); // [N, L, D]
    hiddenStates.push(h);
  }
  const lastHiddenState = clipFinalLayerNorm(scope, c, h); // [N, L, D]
  const pooled = pool(lastHiddenState, opts.poolIndex ?? poolOneHot(inputIds, c)); // [N, D]
  return { lastHiddenState, pooled, hiddenStates };
}

/**
 * `text_model.final_layer_norm` on any states [N, L, D] (diffusers' SD pipelines apply it to the
 * hidden state they pick with `clip_skip`; SDXL uses hidden_states[-2] without it).
 */
export function clipFinalLayerNorm(scope: ParamScope, c: ClipTextConfig, x: Tensor): Tensor {
  return layerNormOf(scope.sub("text_model").sub("final_layer_norm"), c.hiddenSize)(x, c.layerNormEps);
}

/** CLIPTextModelWithProjection's head: pooled [N, D] → text_embeds [N, projection_dim] (no bias). */
export function clipTextProjection(scope: ParamScope, c: ClipTextConfig, pooled: Tensor): Tensor {
  const w = scope
    .sub("text_projection")
    .param(
      "weight",
      [c.projectionDim, c.hiddenSize],
      init.normal(c.hiddenSize ** -0.5 * c.initializerFactor),
    );
  return o.matmul(pooled, o.transpose(w, [1, 0])); // [N, P]
}

/**
 * Every parameter (name, shape, transformers' initialization) in transformers' state-dict order:
 * `text_model.…` and, for CLIPTextModelWithProjection, `text_projection.weight`.
 */
export function clipTextParamSpecs(c: ClipTextConfig, opts: { projection?: boolean } = {}): ParamSpec[] {
  const graph = new Graph();
  const scope = ParamScope.root(graph);
  const { pooled } = clipTextForward(scope, c, graph.input("input_ids", [1, 1], "int64"));
  if (opts.projection) clipTextProjection(scope, c, pooled);
  return scope.specs;
}

/** Token ids as plain rows or an int64 [N, L] tensor. */
export type TokenIds = readonly (readonly number[])[] | HostTensor<"int64">;

/** The rows of `ids` as numbers. */
function rowsOf(ids: TokenIds): number[][] {
  if (ids instanceof HostTensor) {
    const [n, l] = ids.shape as [number, number];
    const data = ids.data as DataOf["int64"];
    return Array.from({ length: n }, (_, i) => Array.from(data.subarray(i * l, (i + 1) * l), Number));
  }
  return ids.map((r) => [...r]);
}

/**
 * The pooled position of each row, on the host, by transformers' rule: the first position of the
 * largest id when `eos_token_id` is 2, otherwise the first position of `eos_token_id` (0 if absent).
 */
export function poolPositions(ids: TokenIds, c: Pick<ClipTextConfig, "eosTokenId">): number[] {
  return rowsOf(ids).map((row) => {
    if (c.eosTokenId === 2) {
      let at = 0;
      for (let j = 1; j < row.length; j++) if (row[j]! > row[at]!) at = j;
      return at;
    }
    return Math.max(row.indexOf(c.eosTokenId), 0); // no end-of-text id: position 0, as argmax of zeros
  });
}
