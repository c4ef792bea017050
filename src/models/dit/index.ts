/** diffusers' DiTTransformer2DModel: config mapping, the traced forward, the registry entry and the model class. */
export {
  DIT_CLASS_NAME,
  DIT_SCHEMA,
  type DiTConfig,
  ditConfig,
  ditConfigFromDiffusers,
  ditConfigToDiffusers,
  innerDim,
  outChannelsOf,
  resolveDiTConfig,
} from "./config.ts";
export { DIT_DEF, ditLabelFeed } from "./def.ts";
export { dit, ditParamSpecs, positionEmbedding } from "./dit.ts";
export { type DiTCallOptions, DiTTransformer2DModel } from "./model.ts";
