/**
 * The DiTTransformer2DModel configuration: diffusers' `config.json` keys ↔ a typed `DiTConfig`, with
 * diffusers' defaults (v0.40 `DiTTransformer2DModel.__init__`, the DiT-XL/2 shape). diffusers builds
 * only the adaLN-Zero variant (`norm_type` "ada_norm_zero", class-conditional), so that is all a config
 * may ask for; other values are refused with the key and what is allowed.
 */
import {
  BOUNDS,
  bool,
  type ConfigSchema,
  configFromFields,
  type DiffusersConfig,
  type FieldTable,
  fail,
  fieldsToDiffusers,
  int,
  nullable,
  oneOf,
  parseFields,
  positive,
  probability,
  resolveFields,
} from "../config-fields.ts";
import { convParams, linearParams } from "../param-estimate.ts";

export interface DiTConfig {
  numAttentionHeads: number;
  attentionHeadDim: number;
  inChannels: number;
  /** null: inChannels. Twice inChannels: the network also predicts its variance ("learned sigma"). */
  outChannels: number | null;
  numLayers: number;
  /** Dropout inside attention and feed-forward (training only; diffuse trains without it). */
  dropout: number;
  /** Unused by DiT (kept for the round trip). */
  normNumGroups: number;
  attentionBias: boolean;
  /** The side of the nominal input; the 2-D position embedding is made for it and scaled from it. */
  sampleSize: number;
  patchSize: number;
  activationFn: "gelu-approximate" | "gelu";
  /** The number of classes; the label table has one more row, the "no class" label of CFG. */
  numEmbedsAdaNorm: number;
  upcastAttention: boolean;
  normType: "ada_norm_zero";
  normElementwiseAffine: boolean;
  normEps: number;
}

export const DIT_CLASS_NAME = "DiTTransformer2DModel";

const FIELDS: FieldTable<DiTConfig> = {
  numAttentionHeads: { key: "num_attention_heads", dflt: 16, parse: int(1, BOUNDS.heads) },
  attentionHeadDim: { key: "attention_head_dim", dflt: 72, parse: int(1, BOUNDS.heads) },
  inChannels: { key: "in_channels", dflt: 4, parse: int(1, BOUNDS.channels) },
  outChannels: { key: "out_channels", dflt: null, parse: nullable(int(1, BOUNDS.channels)) },
  numLayers: { key: "num_layers", dflt: 28, parse: int(1, BOUNDS.depth) },
  dropout: { key: "dropout", dflt: 0, parse: probability },
  normNumGroups: { key: "norm_num_groups", dflt: 32, parse: int(1, BOUNDS.width) },
  attentionBias: { key: "attention_bias", dflt: true, parse: bool },
  sampleSize: { key: "sample_size", dflt: 32, parse: int(1, BOUNDS.sampleSize) },
  patchSize: { key: "patch_size", dflt: 2, parse: int(1, BOUNDS.kernel) },
  activationFn: {
    key: "activation_fn",
    dflt: "gelu-approximate",
    parse: oneOf(["gelu-approximate", "gelu"]),
  },
  numEmbedsAdaNorm: {
    key: "num_embeds_ada_norm",
    dflt: 1000,
    parse: (v, k) =>
      v === null
        ? fail(k, v, "the number of classes (DiT is class-conditional)")
        : int(1, BOUNDS.classes)(v, k),
  },
  upcastAttention: { key: "upcast_attention", dflt: false, parse: bool },
  normType: { key: "norm_type", dflt: "ada_norm_zero", parse: oneOf(["ada_norm_zero"]) },
  normElementwiseAffine: { key: "norm_elementwise_affine", dflt: false, parse: bool },
  normEps: { key: "norm_eps", dflt: 1e-5, parse: positive },
};

/** The most patches along a side: the position embedding holds (side)² × width numbers. */
export const MAX_PATCHES_PER_SIDE = 128;

function validate(c: DiTConfig): void {
  if (c.sampleSize % c.patchSize !== 0) {
    fail("patch_size", c.patchSize, `a divisor of sample_size (${c.sampleSize})`);
  }
  if (c.sampleSize / c.patchSize > MAX_PATCHES_PER_SIDE) {
    fail(
      "sample_size",
      c.sampleSize,
      `at most ${MAX_PATCHES_PER_SIDE} × patch_size (${MAX_PATCHES_PER_SIDE * c.patchSize}): ${MAX_PATCHES_PER_SIDE} patches a side`,
    );
  }
  if (innerDim(c) > BOUNDS.width) {
    fail(
      "attention_head_dim",
      c.attentionHeadDim,
      `a width (num_attention_heads ${c.numAttentionHeads} × attention_head_dim) of at most ${BOUNDS.width}`,
    );
  }
  if (c.normElementwiseAffine) {
    fail("norm_elementwise_affine", true, "false (adaLN-Zero modulates the norms instead)");
  }
  if ((c.numAttentionHeads * c.attentionHeadDim) % 4 !== 0) {
    fail(
      "attention_head_dim",
      c.attentionHeadDim,
      "a width (num_attention_heads × attention_head_dim) divisible by 4, as the 2-D position embedding needs",
    );
  }
}

export const DIT_SCHEMA: ConfigSchema<DiTConfig> = {
  className: DIT_CLASS_NAME,
  fields: FIELDS,
  foreignKeys: [
    "cross_attention_dim",
    "caption_projection_dim",
    "joint_attention_dim",
    "pooled_projection_dim",
  ],
  foreignOwner: "a text-conditioned transformer (e.g. SD3Transformer2DModel)",
  validate,
  estimateParams: ditParamEstimate,
  sizeKeys: ["num_layers", "num_attention_heads", "attention_head_dim", "num_embeds_ada_norm"],
};

export const ditConfigFromDiffusers = (json: DiffusersConfig): DiTConfig => parseFields(DIT_SCHEMA, json);
export const ditConfig = (fields: Partial<DiTConfig> = {}): DiTConfig => configFromFields(DIT_SCHEMA, fields);
export const resolveDiTConfig = (config: DiffusersConfig | Partial<DiTConfig>): DiTConfig =>
  resolveFields(DIT_SCHEMA, config);
export const ditConfigToDiffusers = (c: DiTConfig): DiffusersConfig => fieldsToDiffusers(DIT_SCHEMA, c);

/** The transformer's width: heads × head dim. */
export const innerDim = (c: DiTConfig): number => c.numAttentionHeads * c.attentionHeadDim;
/** Output channels (out_channels, or in_channels when null). */
export const outChannelsOf = (c: DiTConfig): number => c.outChannels ?? c.inChannels;

/**
 * About how many parameters a config implies (diffusers' DiTTransformer2DModel): the patch embedding;
 * per layer an adaLN-Zero norm with its own timestep and class embedding, attention and a 4× MLP;
 * the output head (its norm has no weights).
 */
export function ditParamEstimate(c: DiTConfig): number {
  const d = innerDim(c);
  const p = c.patchSize;
  const layer =
    linearParams(256, d) +
    linearParams(d, d) +
    (c.numEmbedsAdaNorm + 1) * d + // the timestep and label embedding of norm1
    linearParams(d, 6 * d) +
    4 * linearParams(d, d, c.attentionBias) +
    linearParams(d, 4 * d) +
    linearParams(4 * d, d);
  return (
    convParams(c.inChannels, d, p) +
    c.numLayers * layer +
    linearParams(d, 2 * d) +
    linearParams(d, p * p * outChannelsOf(c))
  );
}
