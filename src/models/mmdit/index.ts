/** diffusers' SD3Transformer2DModel (MM-DiT): config mapping, the traced forward, the registry entry and the model class. */
export {
  resolveSD3Config,
  SD3_CLASS_NAME,
  SD3_SCHEMA,
  type SD3Config,
  sd3Config,
  sd3ConfigFromDiffusers,
  sd3ConfigToDiffusers,
  sd3InnerDim,
  sd3OutChannels,
} from "./config.ts";
export { SD3_DEF, SD3_TEXT_LENGTH, sd3TextFeeds } from "./def.ts";
export {
  type JointAttentionOptions,
  type JointBlockOptions,
  jointAttention,
  jointBlock,
} from "./joint-block.ts";
export { mmdit, mmditParamSpecs, POS_TABLE, sd3PositionTable } from "./mmdit.ts";
export { type SD3CallOptions, SD3Transformer2DModel } from "./model.ts";
