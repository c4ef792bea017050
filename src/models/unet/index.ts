/** diffusers' UNet2DModel: config mapping, blocks, the traced forward and the model class. */
export {
  type AttentionBlockOptions,
  attentionBlock,
  type BlockContext,
  downBlock2D,
  downsample2D,
  midBlock2D,
  type ResnetOptions,
  resnetBlock2D,
  upBlock2D,
  upsample2D,
} from "./blocks.ts";
export {
  type ClassConditioning,
  ConfigError,
  classConditioning,
  DIFFUSERS_VERSION,
  type DiffusersConfig,
  type DownBlockType,
  resolveUNetConfig,
  timeEmbedDim,
  type UNet2DConfig,
  type UpBlockType,
  unetConfig,
  unetConfigFromDiffusers,
  unetConfigToDiffusers,
} from "./config.ts";
export {
  type FromConfigOptions,
  type FromPretrainedOptions,
  type ModelOptions,
  type TensorLike,
  UNet2DModel,
  type UNetCallOptions,
} from "./model.ts";
export {
  CONFIG_NAME,
  readUNetConfig,
  readUNetWeights,
  renameLegacyKey,
  type SaveOptions,
  WEIGHTS_NAME,
  writeUNetPretrained,
} from "./pretrained.ts";
export {
  classLabelSpec,
  DROPOUT_NOISE_PREFIX,
  dropoutNoiseInputs,
  initUNet,
  sortStateDict,
  type UNetForwardOptions,
  unet2d,
  unetForward,
  unetParamSpecs,
} from "./unet.ts";
