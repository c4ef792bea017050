/**
 * The ControlNetModel configuration (Zhang, Rao & Agrawala 2023, "Adding Conditional Control to
 * Text-to-Image Diffusion Models"): diffusers' `config.json` keys ↔ a typed, camelCase
 * `ControlNetConfig`, with diffusers' defaults (v0.40 `ControlNetModel.__init__`).
 *
 * A ControlNet is a trainable copy of a UNet2DConditionModel's encoder (conv_in, time embedding, down
 * blocks, mid block), so its keys are that U-Net's encoder keys — the field parsers are the U-Net's
 * own (../unet-cond/config.ts) — plus its own: `conditioning_channels` and
 * `conditioning_embedding_out_channels` (the small convolutional encoder of the control image),
 * `controlnet_conditioning_channel_order` ("rgb" or "bgr") and `global_pool_conditions`.
 * `controlNetUNetConfig` gives the U-Net config whose encoder the ControlNet runs (and whose skips its
 * residuals join); `controlNetConfigFromUNet` goes the other way (diffusers' `from_unet`).
 */
import {
  bool,
  ConfigError,
  type ConfigSchema,
  configFromFields,
  type DiffusersConfig,
  type FieldTable,
  fieldsToDiffusers,
  int,
  list,
  oneOf,
  parseFields,
  resolveFields,
} from "../config-fields.ts";
import {
  type CondDownBlockType,
  type CondMidBlockType,
  type CondUpBlockType,
  condTimeEmbedDim,
  UNET2D_COND_SCHEMA,
  type UNet2DConditionConfig,
} from "../unet-cond/config.ts";

type U = UNet2DConditionConfig;

export interface ControlNetConfig {
  inChannels: number;
  /** Channels of the control image (controlnet_cond [N, conditioning_channels, H·f, W·f]). */
  conditioningChannels: number;
  flipSinToCos: boolean;
  freqShift: number;
  downBlockTypes: readonly CondDownBlockType[];
  /** diffusers' ControlNet always has a mid block. */
  midBlockType: CondMidBlockType;
  onlyCrossAttention: U["onlyCrossAttention"];
  blockOutChannels: readonly number[];
  /** Resnets per down block (one number: diffusers' ControlNetModel takes no per-block list). */
  layersPerBlock: number;
  downsamplePadding: number;
  midBlockScaleFactor: number;
  actFn: U["actFn"];
  normNumGroups: number;
  normEps: number;
  crossAttentionDim: number;
  transformerLayersPerBlock: U["transformerLayersPerBlock"];
  encoderHidDim: null;
  encoderHidDimType: null;
  /** The number of attention HEADS per block (diffusers' legacy name), as in UNet2DConditionModel. */
  attentionHeadDim: U["attentionHeadDim"];
  numAttentionHeads: null;
  useLinearProjection: boolean;
  classEmbedType: null;
  additionEmbedType: null;
  additionTimeEmbedDim: number | null;
  numClassEmbeds: null;
  upcastAttention: boolean;
  resnetTimeScaleShift: U["resnetTimeScaleShift"];
  projectionClassEmbeddingsInputDim: number | null;
  /** "bgr": the control image's channels are reversed before the conditioning embedding. */
  controlnetConditioningChannelOrder: "rgb" | "bgr";
  /** Channels of the conditioning embedding's convolutions; each step after the first halves the size. */
  conditioningEmbeddingOutChannels: readonly number[];
  /** Residuals averaged over height and width ([N, C, 1, 1]; the "shuffle" ControlNets). */
  globalPoolConditions: boolean;
  additionEmbedTypeNumHeads: number;
}

export const CONTROLNET_CLASS_NAME = "ControlNetModel";

const F = UNET2D_COND_SCHEMA.fields;

/** Every ControlNetModel key: its diffusers name, default and parser (the U-Net's where they share one). */
const FIELDS: FieldTable<ControlNetConfig> = {
  inChannels: F.inChannels,
  conditioningChannels: { key: "conditioning_channels", dflt: 3, parse: int(1) },
  flipSinToCos: F.flipSinToCos,
  freqShift: F.freqShift,
  downBlockTypes: F.downBlockTypes,
  midBlockType: {
    key: "mid_block_type",
    dflt: "UNetMidBlock2DCrossAttn",
    parse: oneOf(["UNetMidBlock2DCrossAttn", "UNetMidBlock2D"]),
  },
  onlyCrossAttention: F.onlyCrossAttention,
  blockOutChannels: F.blockOutChannels,
  layersPerBlock: { key: "layers_per_block", dflt: 2, parse: int(1) },
  downsamplePadding: F.downsamplePadding,
  midBlockScaleFactor: F.midBlockScaleFactor,
  actFn: F.actFn,
  normNumGroups: F.normNumGroups,
  normEps: F.normEps,
  crossAttentionDim: F.crossAttentionDim,
  transformerLayersPerBlock: F.transformerLayersPerBlock,
  encoderHidDim: F.encoderHidDim,
  encoderHidDimType: F.encoderHidDimType,
  attentionHeadDim: F.attentionHeadDim,
  numAttentionHeads: F.numAttentionHeads,
  useLinearProjection: F.useLinearProjection,
  classEmbedType: F.classEmbedType,
  additionEmbedType: F.additionEmbedType,
  additionTimeEmbedDim: F.additionTimeEmbedDim,
  numClassEmbeds: F.numClassEmbeds,
  upcastAttention: F.upcastAttention,
  resnetTimeScaleShift: F.resnetTimeScaleShift,
  projectionClassEmbeddingsInputDim: F.projectionClassEmbeddingsInputDim,
  controlnetConditioningChannelOrder: {
    key: "controlnet_conditioning_channel_order",
    dflt: "rgb",
    parse: oneOf(["rgb", "bgr"]),
  },
  conditioningEmbeddingOutChannels: {
    key: "conditioning_embedding_out_channels",
    dflt: [16, 32, 96, 256],
    parse: list(int(1)),
  },
  globalPoolConditions: { key: "global_pool_conditions", dflt: false, parse: bool },
  additionEmbedTypeNumHeads: F.additionEmbedTypeNumHeads,
};

/** UNet2DConditionModel's defaults (the fields a ControlNet does not have keep them). */
const UNET_DEFAULTS = Object.fromEntries(
  Object.entries(F).map(([name, f]) => [name, (f as { dflt: unknown }).dflt]),
) as unknown as UNet2DConditionConfig;

const UP: Readonly<Record<CondDownBlockType, CondUpBlockType>> = {
  CrossAttnDownBlock2D: "CrossAttnUpBlock2D",
  DownBlock2D: "UpBlock2D",
};

/**
 * The UNet2DConditionModel whose encoder this ControlNet is: same encoder fields; its decoder (up
 * blocks, out channels) mirrors the encoder and is never built from here.
 */
export function controlNetUNetConfig(c: ControlNetConfig): UNet2DConditionConfig {
  return {
    ...UNET_DEFAULTS,
    blockOutChannels: c.blockOutChannels,
    normNumGroups: c.normNumGroups,
    inChannels: c.inChannels,
    outChannels: c.inChannels,
    flipSinToCos: c.flipSinToCos,
    freqShift: c.freqShift,
    downBlockTypes: c.downBlockTypes,
    midBlockType: c.midBlockType,
    upBlockTypes: [...c.downBlockTypes].reverse().map((t) => UP[t]),
    onlyCrossAttention: c.onlyCrossAttention,
    layersPerBlock: c.layersPerBlock,
    downsamplePadding: c.downsamplePadding,
    midBlockScaleFactor: c.midBlockScaleFactor,
    actFn: c.actFn,
    normEps: c.normEps,
    crossAttentionDim: c.crossAttentionDim,
    transformerLayersPerBlock: c.transformerLayersPerBlock,
    attentionHeadDim: c.attentionHeadDim,
    useLinearProjection: c.useLinearProjection,
    additionTimeEmbedDim: c.additionTimeEmbedDim,
    additionEmbedTypeNumHeads: c.additionEmbedTypeNumHeads,
    upcastAttention: c.upcastAttention,
    resnetTimeScaleShift: c.resnetTimeScaleShift,
    projectionClassEmbeddingsInputDim: c.projectionClassEmbeddingsInputDim,
  };
}

/** Checks that the fields fit together: the U-Net encoder's rules, then the conditioning embedding's. */
function validate(c: ControlNetConfig): void {
  const n = c.blockOutChannels.length;
  if (c.downBlockTypes.length !== n) {
    throw new ConfigError(
      `${CONTROLNET_CLASS_NAME} config: "down_block_types" (${c.downBlockTypes.length}) and "block_out_channels" (${n}) must have the same length`,
    );
  }
  UNET2D_COND_SCHEMA.validate?.(controlNetUNetConfig(c)); // per-block lists, group counts, heads
}

/** The ControlNetModel field table and its validation. */
export const CONTROLNET_SCHEMA: ConfigSchema<ControlNetConfig> = {
  className: CONTROLNET_CLASS_NAME,
  fields: FIELDS,
  validate,
};

/** Parses a diffusers config.json object: defaults filled in, values and their combination checked. */
export const controlNetConfigFromDiffusers = (json: DiffusersConfig): ControlNetConfig =>
  parseFields(CONTROLNET_SCHEMA, json);

/** A typed config from some of its fields (the rest take diffusers' defaults), checked. */
export const controlNetConfig = (fields: Partial<ControlNetConfig> = {}): ControlNetConfig =>
  configFromFields(CONTROLNET_SCHEMA, fields);

/** Either form: a diffusers config.json object (snake_case) or typed fields (camelCase). */
export const resolveControlNetConfig = (
  config: DiffusersConfig | Partial<ControlNetConfig>,
): ControlNetConfig => resolveFields(CONTROLNET_SCHEMA, config);

/** The config as diffusers writes it: every key, sorted, with `_class_name` and `_diffusers_version`. */
export const controlNetConfigToDiffusers = (cfg: ControlNetConfig): DiffusersConfig =>
  fieldsToDiffusers(CONTROLNET_SCHEMA, cfg);

/** How many times the conditioning embedding halves the control image: 2^(len − 1) is the factor. */
export const controlImageFactor = (c: ControlNetConfig): number =>
  2 ** (c.conditioningEmbeddingOutChannels.length - 1);

/** The ControlNet-only fields `fromUnet` takes (diffusers' `from_unet` keyword arguments). */
export interface FromUNetFields {
  readonly conditioningEmbeddingOutChannels?: readonly number[];
  readonly conditioningChannels?: number;
  readonly controlnetConditioningChannelOrder?: "rgb" | "bgr";
}

/**
 * The ControlNet config that copies a U-Net's encoder (diffusers' `from_unet`). Refuses a U-Net whose
 * encoder a ControlNetModel cannot hold: per-block layer counts, a centred input, a conv_in other than
 * 3×3, a time embedding of another width or with extra activations, LCM's timestep_cond, no mid block.
 */
export function controlNetConfigFromUNet(
  u: UNet2DConditionConfig,
  opts: FromUNetFields = {},
): ControlNetConfig {
  const name = `${CONTROLNET_CLASS_NAME}.fromUnet`;
  const refuse = (key: string, v: unknown, want: string) => {
    throw new ConfigError(
      `${name}: the U-Net's "${key}" is ${JSON.stringify(v)}; a ControlNetModel copies only U-Nets with ${want}`,
    );
  };
  if (typeof u.layersPerBlock !== "number") refuse("layers_per_block", u.layersPerBlock, "one number");
  if (u.centerInputSample) refuse("center_input_sample", true, "center_input_sample false");
  if (u.convInKernel !== 3) refuse("conv_in_kernel", u.convInKernel, "a 3×3 conv_in");
  if (condTimeEmbedDim(u) !== 4 * u.blockOutChannels[0]!) {
    refuse("time_embedding_dim", u.timeEmbeddingDim, "time_embedding_dim null (4 × block_out_channels[0])");
  }
  if (u.timeEmbeddingActFn !== null) refuse("time_embedding_act_fn", u.timeEmbeddingActFn, "null");
  if (u.timestepPostAct !== null) refuse("timestep_post_act", u.timestepPostAct, "null");
  if (u.timeCondProjDim !== null)
    refuse("time_cond_proj_dim", u.timeCondProjDim, "null (no LCM timestep_cond)");
  if (u.midBlockType === null) refuse("mid_block_type", null, "a mid block");
  return configFromFields(CONTROLNET_SCHEMA, {
    inChannels: u.inChannels,
    flipSinToCos: u.flipSinToCos,
    freqShift: u.freqShift,
    downBlockTypes: u.downBlockTypes,
    midBlockType: u.midBlockType!,
    onlyCrossAttention: u.onlyCrossAttention,
    blockOutChannels: u.blockOutChannels,
    layersPerBlock: u.layersPerBlock as number,
    downsamplePadding: u.downsamplePadding,
    midBlockScaleFactor: u.midBlockScaleFactor,
    actFn: u.actFn,
    normNumGroups: u.normNumGroups,
    normEps: u.normEps,
    crossAttentionDim: u.crossAttentionDim,
    transformerLayersPerBlock: u.transformerLayersPerBlock,
    attentionHeadDim: u.attentionHeadDim,
    useLinearProjection: u.useLinearProjection,
    additionTimeEmbedDim: u.additionTimeEmbedDim,
    upcastAttention: u.upcastAttention,
    resnetTimeScaleShift: u.resnetTimeScaleShift,
    projectionClassEmbeddingsInputDim: u.projectionClassEmbeddingsInputDim,
    ...(opts.conditioningEmbeddingOutChannels
      ? { conditioningEmbeddingOutChannels: opts.conditioningEmbeddingOutChannels }
      : {}),
    ...(opts.conditioningChannels !== undefined ? { conditioningChannels: opts.conditioningChannels } : {}),
    ...(opts.controlnetConditioningChannelOrder
      ? { controlnetConditioningChannelOrder: opts.controlnetConditioningChannelOrder }
      : {}),
  });
}
