/** diffusers' UNet2DConditionModel: config mapping, the Transformer2DModel, the traced forward, the registry entry and the model class. */
export {
  type Activation,
  attentionPlan,
  type CondDownBlockType,
  type CondMidBlockType,
  type CondUpBlockType,
  condTimeEmbedDim,
  resolveUNetCondConfig,
  skipChannels,
  UNET2D_COND_CLASS_NAME,
  UNET2D_COND_SCHEMA,
  type UNet2DConditionConfig,
  unetCondConfig,
  unetCondConfigFromDiffusers,
  unetCondConfigToDiffusers,
} from "./config.ts";
export {
  DEFAULT_TEXT_LENGTH,
  DOWN_RESIDUAL_PREFIX,
  MID_RESIDUAL,
  TIMESTEP_COND,
  textEmbedsFeed,
  UNET2D_COND_DEF,
} from "./def.ts";
export { UNet2DConditionModel, type UNetCondCallOptions } from "./model.ts";
export { basicTransformerBlock, type Transformer2DOptions, transformer2D } from "./transformer.ts";
export { initUNetCond, type UNetCondInputs, unet2dCondition, unetCondParamSpecs } from "./unet-cond.ts";
