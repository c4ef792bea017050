/**
 * The SD3Transformer2DModel configuration (Esser et al. 2024, "Scaling Rectified Flow Transformers
 * for High-Resolution Image Synthesis": the MM-DiT of Stable Diffusion 3): diffusers' `config.json`
 * keys ↔ a typed `SD3Config`, with diffusers' defaults (v0.40 `SD3Transformer2DModel.__init__`, the
 * SD3-medium-like shape). SD3.5 adds `qk_norm: "rms_norm"` and, for SD3.5 Medium, `dual_attention_layers`.
 *
 * What must fit together is checked here, with the key and the fix: the text tokens join the image
 * tokens' attention, so `caption_projection_dim` is the transformer's width; the position table is
 * cropped from a `pos_embed_max_size`² grid, so the nominal grid of patches must fit in it.
 */
import {
  BOUNDS,
  type ConfigSchema,
  configFromFields,
  type DiffusersConfig,
  type FieldTable,
  fail,
  fieldsToDiffusers,
  int,
  nullable,
  type Parse,
  parseFields,
  resolveFields,
} from "../config-fields.ts";

export interface SD3Config {
  /** The side of the nominal latent; the position table's scale (base_size = sample_size / patch_size). */
  sampleSize: number;
  patchSize: number;
  inChannels: number;
  numLayers: number;
  attentionHeadDim: number;
  numAttentionHeads: number;
  /** Width of the text tokens the model takes (encoder_hidden_states [N, L, joint_attention_dim]). */
  jointAttentionDim: number;
  /** Width the text tokens are projected to: the transformer's width (heads × head dim). */
  captionProjectionDim: number;
  /** Width of the pooled text vector (pooled_projections [N, pooled_projection_dim]). */
  pooledProjectionDim: number;
  /** null: inChannels. */
  outChannels: number | null;
  /** Side of the stored sincos grid (in patches) that inputs are cropped from: the largest input is pos_embed_max_size·patch_size. */
  posEmbedMaxSize: number;
  /** Blocks with a second, image-only self-attention (SD3.5 Medium: 0..12); [] for SD3. */
  dualAttentionLayers: readonly number[];
  /** RMS norm of each head's queries and keys (SD3.5), or none (SD3). */
  qkNorm: "rms_norm" | null;
}

export const SD3_CLASS_NAME = "SD3Transformer2DModel";

/** A list of block indices, possibly empty (diffusers' tuple, written as a JSON list). */
const blockIndices: Parse<readonly number[]> = (v, k) =>
  Array.isArray(v)
    ? v.map((x, i) => int(0)(x, `${k}[${i}]`))
    : fail(k, v, "a list of block indices ([] for SD3; e.g. [0, 1, …, 12] for SD3.5 Medium)");

const FIELDS: FieldTable<SD3Config> = {
  sampleSize: { key: "sample_size", dflt: 128, parse: int(1, BOUNDS.sampleSize) },
  patchSize: { key: "patch_size", dflt: 2, parse: int(1, BOUNDS.kernel) },
  inChannels: { key: "in_channels", dflt: 16, parse: int(1, BOUNDS.channels) },
  numLayers: { key: "num_layers", dflt: 18, parse: int(1, BOUNDS.depth) },
  attentionHeadDim: { key: "attention_head_dim", dflt: 64, parse: int(1, BOUNDS.heads) },
  numAttentionHeads: { key: "num_attention_heads", dflt: 18, parse: int(1, BOUNDS.heads) },
  jointAttentionDim: { key: "joint_attention_dim", dflt: 4096, parse: int(1, BOUNDS.width) },
  captionProjectionDim: { key: "caption_projection_dim", dflt: 1152, parse: int(1, BOUNDS.width) },
  pooledProjectionDim: { key: "pooled_projection_dim", dflt: 2048, parse: int(1, BOUNDS.width) },
  outChannels: { key: "out_channels", dflt: 16, parse: nullable(int(1, BOUNDS.channels)) },
  posEmbedMaxSize: {
    key: "pos_embed_max_size",
    dflt: 96,
    parse: (v, k) =>
      v === null
        ? fail(k, v, "an integer ≥ 1 (SD3 crops its position table from a pos_embed_max_size² grid)")
        : int(1, BOUNDS.sampleSize)(v, k),
  },
  dualAttentionLayers: { key: "dual_attention_layers", dflt: [], parse: blockIndices },
  qkNorm: {
    key: "qk_norm",
    dflt: null,
    parse: (v, k) =>
      v === null || v === "rms_norm" ? v : fail(k, v, 'null (SD3) or "rms_norm" (SD3.5); SD3 uses no other'),
  },
};

/** The transformer's width: heads × head dim. */
export const sd3InnerDim = (c: SD3Config): number => c.numAttentionHeads * c.attentionHeadDim;
/** Output channels (out_channels, or in_channels when null). */
export const sd3OutChannels = (c: SD3Config): number => c.outChannels ?? c.inChannels;

function validate(c: SD3Config): void {
  const d = sd3InnerDim(c);
  if (c.captionProjectionDim !== d) {
    fail(
      "caption_projection_dim",
      c.captionProjectionDim,
      `num_attention_heads × attention_head_dim (${c.numAttentionHeads} × ${c.attentionHeadDim} = ${d}): the text tokens join the image tokens' attention at that width`,
    );
  }
  if (d % 4 !== 0) {
    fail(
      "attention_head_dim",
      c.attentionHeadDim,
      `a width (num_attention_heads × attention_head_dim, now ${d}) divisible by 4, as the 2-D position embedding needs`,
    );
  }
  if (c.sampleSize % c.patchSize !== 0) {
    fail("patch_size", c.patchSize, `a divisor of sample_size (${c.sampleSize})`);
  }
  const grid = c.sampleSize / c.patchSize;
  if (c.posEmbedMaxSize < grid) {
    fail(
      "pos_embed_max_size",
      c.posEmbedMaxSize,
      `at least sample_size / patch_size = ${grid}: inputs take their positions from a pos_embed_max_size² grid of patches (or a smaller sample_size)`,
    );
  }
  const bad = c.dualAttentionLayers.find((i) => i >= c.numLayers);
  if (bad !== undefined) {
    fail(
      "dual_attention_layers",
      c.dualAttentionLayers,
      `block indices 0..${c.numLayers - 1} (num_layers is ${c.numLayers}; ${bad} is past the last block)`,
    );
  }
}

export const SD3_SCHEMA: ConfigSchema<SD3Config> = {
  className: SD3_CLASS_NAME,
  fields: FIELDS,
  foreignKeys: ["num_embeds_ada_norm", "cross_attention_dim"],
  foreignOwner:
    "a class-conditional DiT or a U-Net (SD3 attends to its text tokens jointly, not by cross-attention)",
  validate,
};

export const sd3ConfigFromDiffusers = (json: DiffusersConfig): SD3Config => parseFields(SD3_SCHEMA, json);
export const sd3Config = (fields: Partial<SD3Config> = {}): SD3Config => configFromFields(SD3_SCHEMA, fields);
export const resolveSD3Config = (config: DiffusersConfig | Partial<SD3Config>): SD3Config =>
  resolveFields(SD3_SCHEMA, config);
export const sd3ConfigToDiffusers = (c: SD3Config): DiffusersConfig => fieldsToDiffusers(SD3_SCHEMA, c);
