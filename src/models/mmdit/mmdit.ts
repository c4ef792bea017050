/**
 * The SD3 transformer's forward pass (Esser et al. 2024, "Scaling Rectified Flow Transformers for
 * High-Resolution Image Synthesis"; diffusers' `SD3Transformer2DModel`) as a function over a
 * parameter scope: `mmdit(scope, cfg, x, t, text, pooled)`.
 *
 *   x [N, C, H, W] → patchify (conv p×p, stride p) + the centre h×w crop of the stored
 *                    pos_embed_max_size² sincos table                       → image tokens [N, h·w, D]
 *   y = MLP(sinusoidal(t)) + MLP(pooled)                                  (CombinedTimestepTextProjEmbeddings)
 *   c = Linear(text) [N, L, D]                                            (context_embedder)
 *   each block: joint attention of image and text tokens, adaLN-Zero per stream (joint-block.ts)
 *   out: LN(x)·(1 + scale) + shift, (scale, shift) = Linear(SiLU(y)) → Linear → unpatchify [N, C_out, H, W]
 *
 * The position table is diffusers' persistent buffer `pos_embed.pos_embed` [1, M², D]: a parameter
 * here, so a checkpoint's stored table is used as stored; a fresh model gets the 2-D sincos table of
 * an M×M grid scaled to the nominal grid (`sd3PositionTable`, the DiT's `positionEmbedding`).
 *
 * Initialization follows DiT (SD3 is a DiT): xavier-uniform linears, N(0, 0.02) embedders, zero
 * adaLN modulations and a zero output layer — a fresh model outputs exactly 0 and each block starts
 * as the identity of the image tokens.
 */
import { silu } from "../../nn/activations.ts";
import { linear } from "../../nn/linear.ts";
import { layerNorm } from "../../nn/norm.ts";
import type { HostTensor } from "../../tensor/host.ts";
import * as o from "../../tensor/ops.ts";
import { init, ParamScope, type ParamSpec } from "../../tensor/params.ts";
import { Graph, type Tensor } from "../../tensor/symbolic.ts";
import {
  embedderMlp,
  modulate,
  patchTokens,
  positionEmbedding,
  timestepEmbedder,
  unpatchify,
  xavierInit,
  zeroInit,
} from "../dit/dit.ts";
import { type SD3Config, sd3InnerDim, sd3OutChannels } from "./config.ts";
import { jointBlock } from "./joint-block.ts";

/** The stored position table's parameter name (diffusers' persistent buffer). */
export const POS_TABLE = "pos_embed.pos_embed";

/** A fresh model's position table [1, M², D]: the sincos table of the M×M grid, scaled to the nominal grid. */
export function sd3PositionTable(cfg: SD3Config): HostTensor<"float32"> {
  const m = cfg.posEmbedMaxSize;
  return positionEmbedding(sd3InnerDim(cfg), m, m, cfg.sampleSize / cfg.patchSize);
}

/** The centre h×w crop of the [1, M², D] table → [1, h·w, D] (diffusers' cropped_pos_embed). */
function croppedPositions(table: Tensor, m: number, h: number, w: number): Tensor {
  const d = table.shape[2]!;
  const top = Math.floor((m - h) / 2);
  const left = Math.floor((m - w) / 2);
  const grid = o.reshape(table, [1, m, m, d]);
  const crop = o.slice(o.slice(grid, 1, top, top + h), 2, left, left + w); // [1, h, w, D]
  return o.reshape(crop, [1, h * w, d]);
}

/** Checks a traced input's shape: `what` must be `want` (−1: any). */
function expectShape(what: string, t: Tensor, want: readonly number[], fix: string): void {
  if (t.rank !== want.length || want.some((s, i) => s >= 0 && t.shape[i] !== s)) {
    const shown = want.map((s) => (s < 0 ? "L" : String(s))).join(", ");
    throw new Error(`sd3: ${what} must be [${shown}], got [${t.shape.join(", ")}]; ${fix}`);
  }
}

/**
 * The forward pass. sample [N, in_channels, H, W] (H and W multiples of patch_size, at most
 * pos_embed_max_size·patch_size); timesteps float32 [N] (SD3: σ·1000); text [N, L, joint_attention_dim];
 * pooled [N, pooled_projection_dim]. Returns [N, out_channels, H, W].
 */
export function mmdit(
  p: ParamScope,
  cfg: SD3Config,
  sample: Tensor,
  timesteps: Tensor,
  text: Tensor,
  pooled: Tensor,
): Tensor {
  const [n, , hgt, wid] = sample.shape as [number, number, number, number];
  const ps = cfg.patchSize;
  const m = cfg.posEmbedMaxSize;
  expectShape("sample", sample, [n, cfg.inChannels, -1, -1], "pass latents with in_channels channels");
  if (hgt % ps !== 0 || wid % ps !== 0) {
    throw new Error(`sd3: height and width must be multiples of patch_size ${ps}, got ${hgt}×${wid}`);
  }
  const [h, w] = [hgt / ps, wid / ps];
  if (h > m || w > m) {
    throw new Error(
      `sd3: a ${hgt}×${wid} input is ${h}×${w} patches, but positions exist for at most ${m}×${m} (pos_embed_max_size ${m}); pass at most ${m * ps}×${m * ps}`,
    );
  }
  expectShape(
    "encoder_hidden_states",
    text,
    [n, -1, cfg.jointAttentionDim],
    `the text embeddings' width must be joint_attention_dim ${cfg.jointAttentionDim}`,
  );
  expectShape(
    "pooled_projections",
    pooled,
    [n, cfg.pooledProjectionDim],
    `the pooled text vector's width must be pooled_projection_dim ${cfg.pooledProjectionDim}`,
  );
  const d = sd3InnerDim(cfg);
  const cout = sd3OutChannels(cfg);
  const t = o.expand(o.reshape(o.cast(timesteps, "float32"), [-1]), [n]); // [N]

  const pe = p.sub("pos_embed");
  const table = pe.param("pos_embed", [1, m * m, d], init.zeros()); // a fresh model's: sd3PositionTable
  let x = o.add(patchTokens(pe, sample, d, ps), croppedPositions(table, m, h, w)); // [N, L, D]

  const te = p.sub("time_text_embed");
  const y = o.add(
    timestepEmbedder(te.sub("timestep_embedder"), t, d, 0), // [N, D]
    embedderMlp(te.sub("text_embedder"), pooled, d), // [N, D]
  );
  let c: Tensor | undefined = linear(p.sub("context_embedder"), text, cfg.captionProjectionDim, {
    init: xavierInit(cfg.jointAttentionDim, cfg.captionProjectionDim),
  }); // [N, Lc, D]

  const blocks = p.sub("transformer_blocks");
  const dual = new Set(cfg.dualAttentionLayers);
  for (let i = 0; i < cfg.numLayers; i++) {
    const out = jointBlock(blocks.sub(i), x, c!, y, {
      heads: cfg.numAttentionHeads,
      headDim: cfg.attentionHeadDim,
      qkNorm: cfg.qkNorm === "rms_norm",
      contextPreOnly: i === cfg.numLayers - 1,
      dualAttention: dual.has(i),
    });
    x = out.x; // [N, L, D]
    c = out.c; // [N, Lc, D] (none after the last block)
  }

  const emb = linear(p.sub("norm_out").sub("linear"), silu(y), 2 * d, { init: zeroInit }); // [N, 2D]
  const [scale, shift] = o.split(emb, 1, 2) as [Tensor, Tensor]; // AdaLayerNormContinuous: scale first
  x = modulate(layerNorm(p, x, 1e-6, false), shift, scale); // [N, L, D]
  x = linear(p.sub("proj_out"), x, ps * ps * cout, { init: zeroInit }); // [N, L, p·p·C]
  return unpatchify(x, h, w, ps, cout); // [N, C_out, H, W]
}

/** Every parameter (name, shape, initialization), in diffusers' state-dict order (the position table first). */
export function mmditParamSpecs(cfg: SD3Config): ParamSpec[] {
  const graph = new Graph();
  const side = cfg.patchSize; // the parameters do not depend on the input's size: trace one patch
  const scope = ParamScope.root(graph);
  mmdit(
    scope,
    cfg,
    graph.input("sample", [1, cfg.inChannels, side, side]),
    graph.input("timestep", [1]),
    graph.input("encoder_hidden_states", [1, 1, cfg.jointAttentionDim]),
    graph.input("pooled_projections", [1, cfg.pooledProjectionDim]),
  );
  return scope.specs;
}
