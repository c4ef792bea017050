/** diffusers' AutoencoderKL: config mapping, the traced encoder/decoder and the model class. */
export {
  AUTOENCODER_KL_CLASS_NAME,
  AUTOENCODER_KL_SCHEMA,
  type AutoencoderKLConfig,
  resolveVaeConfig,
  VAE_NORM_EPS,
  vaeConfig,
  vaeConfigFromDiffusers,
  vaeConfigToDiffusers,
  vaeDownsamplingSteps,
  vaeScaleFactor,
} from "./config.ts";
export {
  AutoencoderKL,
  DEFAULT_SLICE_SIZE,
  DiagonalGaussian,
  type ImageLike,
  type LatentDistribution,
  sampleLatent,
  type VaeCallOptions,
  type VaeModelOptions,
} from "./model.ts";
export {
  checkVaeInput,
  checkVaeLatent,
  initVae,
  LOGVAR_RANGE,
  type VaeMoments,
  vaeDecode,
  vaeDecoder,
  vaeEncode,
  vaeEncoder,
  vaeParamSpecs,
} from "./vae.ts";
