/**
 * The UNet2DModel configuration: diffusers' `config.json` keys (snake_case, as every checkpoint on the
 * hub carries them) ↔ a typed, camelCase `UNet2DConfig`, with diffusers' defaults (v0.40
 * `UNet2DModel.__init__`). This is the one mapper at that boundary (STYLE principle 4).
 *
 * Unknown keys are handled as diffusers does (ignored), except keys of other diffusers U-Nets that
 * would change the network (cross-attention and the like): a config with those is rejected, since
 * running it as a plain UNet2DModel would silently compute something else. Supported keys with
 * values outside the supported subset are rejected with the key, the value and what is allowed.
 */
import {
  BOUNDS,
  bool,
  ConfigError,
  type ConfigSchema,
  configFromFields,
  type DiffusersConfig,
  type FieldTable,
  fail,
  fieldsToDiffusers,
  int,
  list,
  nullable,
  num,
  oneOf,
  type Parse,
  parseFields,
  positive,
  probability,
  resolveFields,
} from "../config-fields.ts";
import {
  convParams,
  linearParams,
  normParams,
  resnetParams,
  selfAttentionParams,
} from "../param-estimate.ts";

export { ConfigError, DIFFUSERS_VERSION, type DiffusersConfig } from "../config-fields.ts";

export type DownBlockType = "DownBlock2D" | "AttnDownBlock2D";
export type UpBlockType = "UpBlock2D" | "AttnUpBlock2D";

export interface UNet2DConfig {
  /** Nominal input size: a number, [height, width] or null (informative; forward takes any size). */
  sampleSize: number | readonly [number, number] | null;
  inChannels: number;
  outChannels: number;
  /** x ↦ 2x − 1 before conv_in. */
  centerInputSample: boolean;
  timeEmbeddingType: "positional";
  /** Width of the time embedding (null: 4 × blockOutChannels[0]). */
  timeEmbeddingDim: number | null;
  freqShift: number;
  flipSinToCos: boolean;
  downBlockTypes: readonly DownBlockType[];
  midBlockType: "UNetMidBlock2D" | null;
  upBlockTypes: readonly UpBlockType[];
  blockOutChannels: readonly number[];
  layersPerBlock: number;
  midBlockScaleFactor: number;
  downsamplePadding: number;
  /** How AttnDownBlock2D downsamples (DownBlock2D always uses a conv, as in diffusers). */
  downsampleType: "conv" | "resnet";
  /** How AttnUpBlock2D upsamples (UpBlock2D always uses a conv, as in diffusers). */
  upsampleType: "conv" | "resnet";
  /** Dropout probability inside each ResnetBlock2D (training only; see `UNetForwardOptions`). */
  dropout: number;
  /** The resnets' nonlinearity ("swish" is diffusers' alias of SiLU). */
  actFn: "silu" | "swish";
  /** Channels per attention head (null: one head spanning the block's channels). */
  attentionHeadDim: number | null;
  normNumGroups: number;
  /** Groups of the mid block's attention norm (null: normNumGroups, or no norm with scale_shift). */
  attnNormNumGroups: number | null;
  normEps: number;
  resnetTimeScaleShift: "default" | "scale_shift";
  /** Attention in the mid block. */
  addAttention: boolean;
  /** null: a class table when numClassEmbeds is set; "timestep": labels through a second time MLP; "identity": labels are [N, time embedding dim] vectors. */
  classEmbedType: "timestep" | "identity" | null;
  numClassEmbeds: number | null;
  /** Only used by time_embedding_type "learned" (not supported); kept for the round trip. */
  numTrainTimesteps: number | null;
}

export const UNET2D_CLASS_NAME = "UNet2DModel";

/** diffusers strips a "UNetRes" prefix from block names ("UNetResDownBlock2D" = "DownBlock2D"). */
export const blockType = <T extends string>(allowed: readonly T[]): Parse<T> => {
  const p = oneOf(allowed);
  return (v, k) => p(typeof v === "string" && v.startsWith("UNetRes") ? v.slice(7) : v, k);
};
/** sample_size: a number, [height, width] or null (each side within BOUNDS.sampleSize). */
export const sampleSize: Parse<number | readonly [number, number] | null> = (v, k) => {
  const side = int(1, BOUNDS.sampleSize);
  if (v === null) return null;
  if (Array.isArray(v) && v.length === 2) return [side(v[0], `${k}[0]`), side(v[1], `${k}[1]`)];
  return side(v, k);
};

/** Every UNet2DModel key: its diffusers name, default and parser. */
const FIELDS: FieldTable<UNet2DConfig> = {
  sampleSize: { key: "sample_size", dflt: null, parse: sampleSize },
  inChannels: { key: "in_channels", dflt: 3, parse: int(1, BOUNDS.channels) },
  outChannels: { key: "out_channels", dflt: 3, parse: int(1, BOUNDS.channels) },
  centerInputSample: { key: "center_input_sample", dflt: false, parse: bool },
  timeEmbeddingType: { key: "time_embedding_type", dflt: "positional", parse: oneOf(["positional"]) },
  timeEmbeddingDim: { key: "time_embedding_dim", dflt: null, parse: nullable(int(1, BOUNDS.width)) },
  freqShift: { key: "freq_shift", dflt: 0, parse: num },
  flipSinToCos: { key: "flip_sin_to_cos", dflt: true, parse: bool },
  downBlockTypes: {
    key: "down_block_types",
    dflt: ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
    parse: list(blockType(["DownBlock2D", "AttnDownBlock2D"]), BOUNDS.levels),
  },
  midBlockType: { key: "mid_block_type", dflt: "UNetMidBlock2D", parse: nullable(oneOf(["UNetMidBlock2D"])) },
  upBlockTypes: {
    key: "up_block_types",
    dflt: ["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    parse: list(blockType(["UpBlock2D", "AttnUpBlock2D"]), BOUNDS.levels),
  },
  blockOutChannels: {
    key: "block_out_channels",
    dflt: [224, 448, 672, 896],
    parse: list(int(1, BOUNDS.width), BOUNDS.levels),
  },
  layersPerBlock: { key: "layers_per_block", dflt: 2, parse: int(1, BOUNDS.depth) },
  midBlockScaleFactor: { key: "mid_block_scale_factor", dflt: 1, parse: positive },
  downsamplePadding: { key: "downsample_padding", dflt: 1, parse: int(0) },
  downsampleType: { key: "downsample_type", dflt: "conv", parse: oneOf(["conv", "resnet"]) },
  upsampleType: { key: "upsample_type", dflt: "conv", parse: oneOf(["conv", "resnet"]) },
  dropout: { key: "dropout", dflt: 0, parse: probability },
  actFn: { key: "act_fn", dflt: "silu", parse: oneOf(["silu", "swish"]) },
  attentionHeadDim: { key: "attention_head_dim", dflt: 8, parse: nullable(int(1, BOUNDS.width)) },
  normNumGroups: { key: "norm_num_groups", dflt: 32, parse: int(1, BOUNDS.width) },
  attnNormNumGroups: { key: "attn_norm_num_groups", dflt: null, parse: nullable(int(1, BOUNDS.width)) },
  normEps: { key: "norm_eps", dflt: 1e-5, parse: positive },
  resnetTimeScaleShift: {
    key: "resnet_time_scale_shift",
    dflt: "default",
    parse: oneOf(["default", "scale_shift"]),
  },
  addAttention: { key: "add_attention", dflt: true, parse: bool },
  classEmbedType: { key: "class_embed_type", dflt: null, parse: nullable(oneOf(["timestep", "identity"])) },
  numClassEmbeds: { key: "num_class_embeds", dflt: null, parse: nullable(int(1, BOUNDS.classes)) },
  numTrainTimesteps: { key: "num_train_timesteps", dflt: null, parse: nullable(int(1)) },
};

/**
 * Keys of UNet2DConditionModel and other diffusers U-Nets that change the architecture. diffusers
 * would ignore them when building a UNet2DModel; we refuse, because such a checkpoint is not one.
 */
const FOREIGN_KEYS = [
  "cross_attention_dim",
  "encoder_hid_dim",
  "encoder_hid_dim_type",
  "transformer_layers_per_block",
  "num_attention_heads",
  "addition_embed_type",
  "only_cross_attention",
  "use_linear_projection",
  "conv_in_kernel",
  "conv_out_kernel",
  "time_cond_proj_dim",
  "projection_class_embeddings_input_dim",
  "class_embeddings_concat",
];

/** The UNet2DModel field table, its foreign keys and its validation. */
export const UNET2D_SCHEMA: ConfigSchema<UNet2DConfig> = {
  className: UNET2D_CLASS_NAME,
  fields: FIELDS,
  foreignKeys: FOREIGN_KEYS,
  foreignOwner: "another U-Net (e.g. UNet2DConditionModel)",
  validate,
  estimateParams: unetParamEstimate,
  sizeKeys: ["block_out_channels", "layers_per_block", "num_class_embeds"],
};

/** Parses a diffusers config.json object: defaults filled in, values and their combination checked. */
export const unetConfigFromDiffusers = (json: DiffusersConfig): UNet2DConfig =>
  parseFields(UNET2D_SCHEMA, json);

/** A typed config from some of its fields (the rest take diffusers' defaults), checked. */
export const unetConfig = (fields: Partial<UNet2DConfig> = {}): UNet2DConfig =>
  configFromFields(UNET2D_SCHEMA, fields);

/** Either form: a diffusers config.json object (snake_case) or typed fields (camelCase). */
export const resolveUNetConfig = (config: DiffusersConfig | Partial<UNet2DConfig>): UNet2DConfig =>
  resolveFields(UNET2D_SCHEMA, config);

/** The config as diffusers writes it: every key, sorted, with `_class_name` and `_diffusers_version`. */
export const unetConfigToDiffusers = (cfg: UNet2DConfig): DiffusersConfig =>
  fieldsToDiffusers(UNET2D_SCHEMA, cfg);

/** Checks that the fields fit together (lengths, group counts, head widths). */
function validate(c: UNet2DConfig): void {
  const n = c.blockOutChannels.length;
  if (c.downBlockTypes.length !== n || c.upBlockTypes.length !== n) {
    throw new ConfigError(
      `UNet2DModel config: "down_block_types" (${c.downBlockTypes.length}), "up_block_types" (${c.upBlockTypes.length}) and "block_out_channels" (${n}) must have the same length`,
    );
  }
  const g = c.normNumGroups;
  for (const ch of c.blockOutChannels) {
    if (ch % g !== 0) {
      fail(
        "norm_num_groups",
        g,
        `a divisor of every block_out_channels entry (${c.blockOutChannels.join(", ")})`,
      );
    }
  }
  const last = c.blockOutChannels[n - 1]!;
  if (c.attnNormNumGroups !== null && last % c.attnNormNumGroups !== 0) {
    fail(
      "attn_norm_num_groups",
      c.attnNormNumGroups,
      `null or a divisor of block_out_channels[-1] (${last})`,
    );
  }
  const hd = c.attentionHeadDim;
  if (hd !== null) {
    const attnChannels = c.blockOutChannels.filter(
      (_, i) => c.downBlockTypes[i] === "AttnDownBlock2D" || c.upBlockTypes[n - 1 - i] === "AttnUpBlock2D",
    );
    if (c.midBlockType !== null && c.addAttention) attnChannels.push(last);
    const narrowest = Math.min(...attnChannels);
    if (hd > narrowest) {
      fail("attention_head_dim", hd, `at most ${narrowest}, the channels of the narrowest attention block`);
    }
  }
}

/** The width of the time embedding: time_embedding_dim or 4 × block_out_channels[0]. */
export const timeEmbedDim = (c: UNet2DConfig): number => c.timeEmbeddingDim ?? 4 * c.blockOutChannels[0]!;

/** How class labels enter, derived from class_embed_type and num_class_embeds as diffusers does. */
export type ClassConditioning = "none" | "table" | "timestep" | "identity";
export function classConditioning(c: UNet2DConfig): ClassConditioning {
  if (c.classEmbedType !== null) return c.classEmbedType;
  return c.numClassEmbeds !== null ? "table" : "none";
}

/** How many times the input is halved (one stride-2 step per down block but the last). */
export const downsamplingSteps = (c: UNet2DConfig): number => c.blockOutChannels.length - 1;

/**
 * About how many parameters a config implies (diffusers' UNet2DModel: conv_in, the time and class
 * embeddings, down blocks of resnets (and attention), the mid block, up blocks of one resnet more
 * taking the skips, the output head), from its fields alone.
 */
export function unetParamEstimate(c: UNet2DConfig): number {
  const ch = c.blockOutChannels;
  const n = ch.length;
  const temb = timeEmbedDim(c);
  const ss = c.resnetTimeScaleShift === "scale_shift";
  const resnet = (cin: number, cout: number) => resnetParams(cin, cout, temb, ss);
  const first = ch[0]!;
  const last = ch[n - 1]!;
  let total = convParams(c.inChannels, first) + linearParams(first, temb) + linearParams(temb, temb);
  const kind = classConditioning(c);
  if (kind === "table") total += (c.numClassEmbeds ?? 0) * temb;
  if (kind === "timestep") total += linearParams(first, temb) + linearParams(temb, temb);
  let prev = first;
  for (let i = 0; i < n; i++) {
    const out = ch[i]!;
    const attn = c.downBlockTypes[i] === "AttnDownBlock2D" ? selfAttentionParams(out) : 0;
    for (let l = 0; l < c.layersPerBlock; l++) total += resnet(l === 0 ? prev : out, out) + attn;
    if (i < n - 1) total += convParams(out, out);
    prev = out;
  }
  if (c.midBlockType !== null)
    total += 2 * resnet(last, last) + (c.addAttention ? selfAttentionParams(last) : 0);
  for (let i = 0; i < n; i++) {
    const out = ch[n - 1 - i]!;
    const attn = c.upBlockTypes[i] === "AttnUpBlock2D" ? selfAttentionParams(out) : 0;
    for (let l = 0; l <= c.layersPerBlock; l++) total += resnet(prev + out, out) + attn;
    if (i < n - 1) total += convParams(out, out);
    prev = out;
  }
  return total + normParams(first) + convParams(first, c.outChannels);
}
