/**
 * The UNet2DConditionModel configuration (the latent U-Net of Stable Diffusion 1.x/2.x, Rombach et al.
 * 2022): diffusers' `config.json` keys ↔ a typed, camelCase `UNet2DConditionConfig`, with diffusers'
 * defaults (v0.40 `UNet2DConditionModel.__init__`, SD 1.x's shape).
 *
 * Supported: CrossAttnDownBlock2D / DownBlock2D, CrossAttnUpBlock2D / UpBlock2D, the
 * UNetMidBlock2DCrossAttn (or UNetMidBlock2D, or none) mid block, per-block head counts and transformer
 * depths, linear or 1×1-conv projections, scale_shift resnets, LCM's `time_cond_proj_dim`. Keys that
 * would build another network (SDXL's addition embeddings, class embeddings, dual or only-cross
 * attention, GLIGEN, Fourier time embeddings, encoder projections) are refused with the key, the value
 * and what diffuse supports. Keys diffusers reads only for block types diffuse does not build
 * (cross_attention_norm, resnet_skip_time_act, resnet_out_scale_factor, …) are kept for the round trip.
 *
 * A naming quirk kept from diffusers: with `num_attention_heads` null (the only value diffusers
 * accepts), `attention_head_dim` is the NUMBER of heads of each block, not their width.
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
  transformer2DParams,
} from "../param-estimate.ts";
import { blockType, sampleSize } from "../unet/config.ts";

export type CondDownBlockType = "CrossAttnDownBlock2D" | "DownBlock2D";
export type CondUpBlockType = "CrossAttnUpBlock2D" | "UpBlock2D";
export type CondMidBlockType = "UNetMidBlock2DCrossAttn" | "UNetMidBlock2D";
/** Activations diffusers' get_activation offers that diffuse has. */
export type Activation = "silu" | "swish" | "gelu";

export interface UNet2DConditionConfig {
  /** Nominal latent size: a number, [height, width] or null (informative; forward takes any size). */
  sampleSize: number | readonly [number, number] | null;
  inChannels: number;
  outChannels: number;
  /** x ↦ 2x − 1 before conv_in. */
  centerInputSample: boolean;
  flipSinToCos: boolean;
  freqShift: number;
  downBlockTypes: readonly CondDownBlockType[];
  /** "UNetMidBlock2D" here is one resnet (diffusers builds it with num_layers 0); null: no mid block. */
  midBlockType: CondMidBlockType | null;
  upBlockTypes: readonly CondUpBlockType[];
  /** false only (or a list of false): self-attention stays self-attention. */
  onlyCrossAttention: boolean | readonly boolean[];
  blockOutChannels: readonly number[];
  /** Resnets per down block (one number, or one per block); up blocks have one more. */
  layersPerBlock: number | readonly number[];
  downsamplePadding: number;
  midBlockScaleFactor: number;
  /** Dropout in the resnets, after attention and inside the feed-forward (training only). */
  dropout: number;
  actFn: "silu" | "swish";
  normNumGroups: number;
  normEps: number;
  /** Width of the text embeddings (encoder_hidden_states [N, L, cross_attention_dim]). */
  crossAttentionDim: number;
  /** BasicTransformerBlocks per Transformer2DModel (one number, or one per block). */
  transformerLayersPerBlock: number | readonly number[];
  reverseTransformerLayersPerBlock: null;
  encoderHidDim: null;
  encoderHidDimType: null;
  /** The number of attention HEADS per block (diffusers' legacy name), one number or one per block. */
  attentionHeadDim: number | readonly number[];
  /** null only (diffusers refuses any other value). */
  numAttentionHeads: null;
  dualCrossAttention: boolean;
  /** Transformer2DModel's proj_in/proj_out as Linear layers (SD 2.x) instead of 1×1 convolutions. */
  useLinearProjection: boolean;
  classEmbedType: null;
  numClassEmbeds: null;
  additionEmbedType: null;
  /** Read by diffusers only for addition_embed_type "text_time" (kept for the round trip). */
  additionTimeEmbedDim: number | null;
  additionEmbedTypeNumHeads: number;
  /** Attention in float32 for half-precision runs: a no-op here (everything runs in float32). */
  upcastAttention: boolean;
  resnetTimeScaleShift: "default" | "scale_shift";
  /** Read by diffusers only for Simple/ResnetDownsample blocks (kept for the round trip). */
  resnetSkipTimeAct: boolean;
  /** Read by diffusers only for Simple/ResnetDownsample blocks (kept for the round trip). */
  resnetOutScaleFactor: number;
  timeEmbeddingType: "positional";
  /** Width of the time embedding (null: 4 × blockOutChannels[0]). */
  timeEmbeddingDim: number | null;
  /** An activation on the time embedding after everything is added to it. */
  timeEmbeddingActFn: Activation | null;
  /** An activation after time_embedding.linear_2. */
  timestepPostAct: Activation | null;
  /** Width of `timestep_cond` (LCM's guidance embedding), projected and added to the sinusoidal features. */
  timeCondProjDim: number | null;
  convInKernel: number;
  convOutKernel: number;
  /** Read by diffusers only for projection class embeddings (kept for the round trip). */
  projectionClassEmbeddingsInputDim: number | null;
  attentionType: "default";
  classEmbeddingsConcat: boolean;
  midBlockOnlyCrossAttention: boolean | null;
  /** Read by diffusers only for Simple cross-attention blocks (kept for the round trip). */
  crossAttentionNorm: "group_norm" | "layer_norm" | null;
}

export const UNET2D_COND_CLASS_NAME = "UNet2DConditionModel";

/** A value diffuse does not build: refused with what is supported and why. */
const only =
  <T>(allowed: T, what: string): Parse<T> =>
  (v, k) =>
    v === allowed ? allowed : fail(k, v, `${JSON.stringify(allowed)} (${what} is not supported)`);

/** A number or one per block. */
const perBlock =
  (p: Parse<number>): Parse<number | readonly number[]> =>
  (v, k) =>
    Array.isArray(v) ? list(p)(v, k) : p(v, k);

const allFalse: Parse<boolean | readonly boolean[]> = (v, k) => {
  const ok = v === false || (Array.isArray(v) && v.length > 0 && v.every((x) => x === false));
  return ok
    ? (v as boolean | readonly boolean[])
    : fail(k, v, "false (only-cross-attention blocks are not supported)");
};

const transformerLayers: Parse<number | readonly number[]> = (v, k) => {
  if (Array.isArray(v) && v.some(Array.isArray)) {
    fail(k, v, "one number or one per block (nested lists for asymmetric U-Nets are not supported)");
  }
  return perBlock(int(1, BOUNDS.depth))(v, k);
};

const oddKernel: Parse<number> = (v, k) =>
  Number.isInteger(v) && (v as number) >= 1 && (v as number) <= BOUNDS.kernel && (v as number) % 2 === 1
    ? (v as number)
    : fail(k, v, `an odd integer from 1 to ${BOUNDS.kernel - 1}`);

const activation = nullable(oneOf<Activation>(["silu", "swish", "gelu"]));

/** Every UNet2DConditionModel key: its diffusers name, default and parser. */
const FIELDS: FieldTable<UNet2DConditionConfig> = {
  sampleSize: { key: "sample_size", dflt: null, parse: sampleSize },
  inChannels: { key: "in_channels", dflt: 4, parse: int(1, BOUNDS.channels) },
  outChannels: { key: "out_channels", dflt: 4, parse: int(1, BOUNDS.channels) },
  centerInputSample: { key: "center_input_sample", dflt: false, parse: bool },
  flipSinToCos: { key: "flip_sin_to_cos", dflt: true, parse: bool },
  freqShift: { key: "freq_shift", dflt: 0, parse: num },
  downBlockTypes: {
    key: "down_block_types",
    dflt: ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    parse: list(blockType(["CrossAttnDownBlock2D", "DownBlock2D"]), BOUNDS.levels),
  },
  midBlockType: {
    key: "mid_block_type",
    dflt: "UNetMidBlock2DCrossAttn",
    parse: nullable(oneOf(["UNetMidBlock2DCrossAttn", "UNetMidBlock2D"])),
  },
  upBlockTypes: {
    key: "up_block_types",
    dflt: ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    parse: list(blockType(["CrossAttnUpBlock2D", "UpBlock2D"]), BOUNDS.levels),
  },
  onlyCrossAttention: { key: "only_cross_attention", dflt: false, parse: allFalse },
  blockOutChannels: {
    key: "block_out_channels",
    dflt: [320, 640, 1280, 1280],
    parse: list(int(1, BOUNDS.width), BOUNDS.levels),
  },
  layersPerBlock: { key: "layers_per_block", dflt: 2, parse: perBlock(int(1, BOUNDS.depth)) },
  downsamplePadding: { key: "downsample_padding", dflt: 1, parse: int(0) },
  midBlockScaleFactor: { key: "mid_block_scale_factor", dflt: 1, parse: positive },
  dropout: { key: "dropout", dflt: 0, parse: probability },
  actFn: { key: "act_fn", dflt: "silu", parse: oneOf(["silu", "swish"]) },
  normNumGroups: { key: "norm_num_groups", dflt: 32, parse: int(1, BOUNDS.width) },
  normEps: { key: "norm_eps", dflt: 1e-5, parse: positive },
  crossAttentionDim: { key: "cross_attention_dim", dflt: 1280, parse: int(1, BOUNDS.width) },
  transformerLayersPerBlock: { key: "transformer_layers_per_block", dflt: 1, parse: transformerLayers },
  reverseTransformerLayersPerBlock: {
    key: "reverse_transformer_layers_per_block",
    dflt: null,
    parse: only(null, "an asymmetric transformer depth"),
  },
  encoderHidDim: { key: "encoder_hid_dim", dflt: null, parse: only(null, "an encoder_hid_proj") },
  encoderHidDimType: { key: "encoder_hid_dim_type", dflt: null, parse: only(null, "an encoder_hid_proj") },
  attentionHeadDim: { key: "attention_head_dim", dflt: 8, parse: perBlock(int(1, BOUNDS.heads)) },
  numAttentionHeads: {
    key: "num_attention_heads",
    dflt: null,
    parse: (v, k) =>
      v === null
        ? null
        : fail(
            k,
            v,
            "null (diffusers' UNet2DConditionModel refuses it too; attention_head_dim is the head count)",
          ),
  },
  dualCrossAttention: {
    key: "dual_cross_attention",
    dflt: false,
    parse: only(false, "dual cross-attention"),
  },
  useLinearProjection: { key: "use_linear_projection", dflt: false, parse: bool },
  classEmbedType: { key: "class_embed_type", dflt: null, parse: only(null, "a class embedding") },
  numClassEmbeds: { key: "num_class_embeds", dflt: null, parse: only(null, "a class embedding") },
  additionEmbedType: {
    key: "addition_embed_type",
    dflt: null,
    parse: only(null, 'an addition embedding (SDXL\'s "text_time", Kandinsky\'s "image", …)'),
  },
  additionTimeEmbedDim: { key: "addition_time_embed_dim", dflt: null, parse: nullable(int(1)) },
  additionEmbedTypeNumHeads: { key: "addition_embed_type_num_heads", dflt: 64, parse: int(1) },
  upcastAttention: { key: "upcast_attention", dflt: false, parse: bool },
  resnetTimeScaleShift: {
    key: "resnet_time_scale_shift",
    dflt: "default",
    parse: oneOf(["default", "scale_shift"]),
  },
  resnetSkipTimeAct: { key: "resnet_skip_time_act", dflt: false, parse: bool },
  resnetOutScaleFactor: { key: "resnet_out_scale_factor", dflt: 1, parse: positive },
  timeEmbeddingType: {
    key: "time_embedding_type",
    dflt: "positional",
    parse: only("positional", "a Fourier time embedding"),
  },
  timeEmbeddingDim: { key: "time_embedding_dim", dflt: null, parse: nullable(int(1, BOUNDS.width)) },
  timeEmbeddingActFn: { key: "time_embedding_act_fn", dflt: null, parse: activation },
  timestepPostAct: { key: "timestep_post_act", dflt: null, parse: activation },
  timeCondProjDim: { key: "time_cond_proj_dim", dflt: null, parse: nullable(int(1, BOUNDS.width)) },
  convInKernel: { key: "conv_in_kernel", dflt: 3, parse: oddKernel },
  convOutKernel: { key: "conv_out_kernel", dflt: 3, parse: oddKernel },
  projectionClassEmbeddingsInputDim: {
    key: "projection_class_embeddings_input_dim",
    dflt: null,
    parse: nullable(int(1)),
  },
  attentionType: {
    key: "attention_type",
    dflt: "default",
    parse: only("default", "GLIGEN's gated attention"),
  },
  classEmbeddingsConcat: {
    key: "class_embeddings_concat",
    dflt: false,
    parse: only(false, "concatenated class embeddings"),
  },
  midBlockOnlyCrossAttention: {
    key: "mid_block_only_cross_attention",
    dflt: null,
    parse: (v, k) =>
      v === null || v === false ? v : fail(k, v, "null or false (only-cross-attention is not supported)"),
  },
  crossAttentionNorm: {
    key: "cross_attention_norm",
    dflt: null,
    parse: nullable(oneOf(["group_norm", "layer_norm"])),
  },
};

/** The UNet2DConditionModel field table and its validation. */
export const UNET2D_COND_SCHEMA: ConfigSchema<UNet2DConditionConfig> = {
  className: UNET2D_COND_CLASS_NAME,
  fields: FIELDS,
  validate,
  estimateParams: unetCondParamEstimate,
  sizeKeys: ["block_out_channels", "layers_per_block", "transformer_layers_per_block", "cross_attention_dim"],
};

/** Parses a diffusers config.json object: defaults filled in, values and their combination checked. */
export const unetCondConfigFromDiffusers = (json: DiffusersConfig): UNet2DConditionConfig =>
  parseFields(UNET2D_COND_SCHEMA, json);

/** A typed config from some of its fields (the rest take diffusers' defaults), checked. */
export const unetCondConfig = (fields: Partial<UNet2DConditionConfig> = {}): UNet2DConditionConfig =>
  configFromFields(UNET2D_COND_SCHEMA, fields);

/** Either form: a diffusers config.json object (snake_case) or typed fields (camelCase). */
export const resolveUNetCondConfig = (
  config: DiffusersConfig | Partial<UNet2DConditionConfig>,
): UNet2DConditionConfig => resolveFields(UNET2D_COND_SCHEMA, config);

/** The config as diffusers writes it: every key, sorted, with `_class_name` and `_diffusers_version`. */
export const unetCondConfigToDiffusers = (cfg: UNet2DConditionConfig): DiffusersConfig =>
  fieldsToDiffusers(UNET2D_COND_SCHEMA, cfg);

/** The value of a per-block field for down block i (a single number applies to every block). */
export function blockValue(v: number | readonly number[], i: number): number {
  return typeof v === "number" ? v : v[i]!;
}

/** Where each block's attention is (down block i and up block i), with its heads and depth. */
export interface BlockAttentionPlan {
  readonly channels: number;
  readonly heads: number;
  readonly layers: number;
}

/** The attention of down block i, up block i (counted from the bottom) or the mid block ("mid"). */
export function attentionPlan(
  c: UNet2DConditionConfig,
  where: "down" | "up" | "mid",
  i = 0,
): BlockAttentionPlan {
  const n = c.blockOutChannels.length;
  const k = where === "mid" ? n - 1 : where === "up" ? n - 1 - i : i;
  return {
    channels: c.blockOutChannels[k]!,
    heads: blockValue(c.attentionHeadDim, k),
    layers: blockValue(c.transformerLayersPerBlock, k),
  };
}

/** Checks that the fields fit together (lengths, group counts, heads). */
function validate(c: UNet2DConditionConfig): void {
  const n = c.blockOutChannels.length;
  if (c.downBlockTypes.length !== n || c.upBlockTypes.length !== n) {
    throw new ConfigError(
      `UNet2DConditionModel config: "down_block_types" (${c.downBlockTypes.length}), "up_block_types" (${c.upBlockTypes.length}) and "block_out_channels" (${n}) must have the same length`,
    );
  }
  const lists: [string, unknown][] = [
    ["layers_per_block", c.layersPerBlock],
    ["attention_head_dim", c.attentionHeadDim],
    ["transformer_layers_per_block", c.transformerLayersPerBlock],
    ["only_cross_attention", c.onlyCrossAttention],
  ];
  for (const [key, v] of lists) {
    if (Array.isArray(v) && v.length !== n) fail(key, v, `one value, or one per block (${n})`);
  }
  const g = c.normNumGroups;
  if (c.blockOutChannels.some((ch) => ch % g !== 0)) {
    fail(
      "norm_num_groups",
      g,
      `a divisor of every block_out_channels entry (${c.blockOutChannels.join(", ")})`,
    );
  }
  const plans: BlockAttentionPlan[] = [];
  c.downBlockTypes.forEach((t, i) => {
    if (t === "CrossAttnDownBlock2D") plans.push(attentionPlan(c, "down", i));
  });
  c.upBlockTypes.forEach((t, i) => {
    if (t === "CrossAttnUpBlock2D") plans.push(attentionPlan(c, "up", i));
  });
  if (c.midBlockType === "UNetMidBlock2DCrossAttn") plans.push(attentionPlan(c, "mid"));
  for (const p of plans) {
    if (p.heads > p.channels) {
      fail(
        "attention_head_dim",
        c.attentionHeadDim,
        `head counts of at most the block's channels (${p.channels})`,
      );
    }
    if (c.useLinearProjection && p.channels % p.heads !== 0) {
      fail(
        "attention_head_dim",
        c.attentionHeadDim,
        `head counts that divide the block's channels (${p.channels}) with use_linear_projection`,
      );
    }
  }
}

/** The width of the time embedding: time_embedding_dim or 4 × block_out_channels[0]. */
export const condTimeEmbedDim = (c: UNet2DConditionConfig): number =>
  c.timeEmbeddingDim ?? 4 * c.blockOutChannels[0]!;

/** How many times the input is halved (one stride-2 step per down block but the last). */
export const condDownsamplingSteps = (c: UNet2DConditionConfig): number => c.blockOutChannels.length - 1;

/** The skip connections (conv_in, each resnet, each downsampler): as many ControlNet residuals. */
export function skipChannels(c: UNet2DConditionConfig): { channels: number; scale: number }[] {
  const out = [{ channels: c.blockOutChannels[0]!, scale: 0 }];
  c.blockOutChannels.forEach((ch, i) => {
    for (let l = 0; l < blockValue(c.layersPerBlock, i); l++) out.push({ channels: ch, scale: i });
    if (i < c.blockOutChannels.length - 1) out.push({ channels: ch, scale: i + 1 });
  });
  return out;
}

/**
 * About how many parameters a config implies (diffusers' UNet2DConditionModel): conv_in, the time
 * embedding, down blocks of resnets (each with a Transformer2DModel in a cross-attention block), the
 * mid block, up blocks of one resnet more taking the skips, the output head — from its fields alone.
 */
export function unetCondParamEstimate(c: UNet2DConditionConfig): number {
  const ch = c.blockOutChannels;
  const n = ch.length;
  const temb = condTimeEmbedDim(c);
  const ss = c.resnetTimeScaleShift === "scale_shift";
  const resnet = (cin: number, cout: number) => resnetParams(cin, cout, temb, ss);
  const transformer = (p: BlockAttentionPlan) =>
    transformer2DParams(p.channels, p.layers, c.crossAttentionDim);
  const first = ch[0]!;
  const last = ch[n - 1]!;
  let total =
    convParams(c.inChannels, first, c.convInKernel) +
    linearParams(first, temb) +
    linearParams(temb, temb) +
    (c.timeCondProjDim !== null ? c.timeCondProjDim * first : 0);
  let prev = first;
  for (let i = 0; i < n; i++) {
    const out = ch[i]!;
    const attn =
      c.downBlockTypes[i] === "CrossAttnDownBlock2D" ? transformer(attentionPlan(c, "down", i)) : 0;
    for (let l = 0; l < blockValue(c.layersPerBlock, i); l++)
      total += resnet(l === 0 ? prev : out, out) + attn;
    if (i < n - 1) total += convParams(out, out);
    prev = out;
  }
  if (c.midBlockType !== null) {
    total +=
      c.midBlockType === "UNetMidBlock2DCrossAttn"
        ? 2 * resnet(last, last) + transformer(attentionPlan(c, "mid"))
        : resnet(last, last);
  }
  for (let i = 0; i < n; i++) {
    const k = n - 1 - i;
    const out = ch[k]!;
    const attn = c.upBlockTypes[i] === "CrossAttnUpBlock2D" ? transformer(attentionPlan(c, "up", i)) : 0;
    for (let l = 0; l <= blockValue(c.layersPerBlock, k); l++) total += resnet(prev + out, out) + attn;
    if (i < n - 1) total += convParams(out, out);
    prev = out;
  }
  return total + normParams(first) + convParams(first, c.outChannels, c.convOutKernel);
}
