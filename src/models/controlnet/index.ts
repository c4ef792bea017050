/** diffusers' ControlNetModel: config mapping, the traced forward (alone or joined to a U-Net), the model class, and U-Net + ControlNet as one denoiser. */
export {
  CONTROLNET_CLASS_NAME,
  CONTROLNET_SCHEMA,
  type ControlNetConfig,
  controlImageFactor,
  controlNetConfig,
  controlNetConfigFromDiffusers,
  controlNetConfigFromUNet,
  controlNetConfigToDiffusers,
  controlNetUNetConfig,
  type FromUNetFields,
  resolveControlNetConfig,
} from "./config.ts";
export {
  CONDITIONING_SCALE,
  CONTROLNET_COND,
  ControlledDenoiser,
  type ControlledOptions,
  controlledBound,
  controlledDenoiser,
  releaseControlled,
} from "./controlled.ts";
export {
  CONTROLNET_SCOPE,
  type ControlNetInputs,
  type ControlNetResiduals,
  checkControlNetFits,
  controlNetCondEmbedding,
  controlNetForward,
  controlNetParamSpecs,
  guessModeScales,
  inControlNetScope,
  initControlNet,
  unet2dConditionWithControlNet,
} from "./controlnet.ts";
export {
  type ControlNetCallOptions,
  ControlNetModel,
  type ControlNetOutput,
  type FromUnetOptions,
  type UNetCondLike,
} from "./model.ts";
