/**
 * The diffusion core: noise schedules, the forward process, parameterizations and the one denoiser
 * type, training-loss helpers and classifier-free guidance. Host-side float64/float32 math only.
 */

export { betaCdf, betaQuantile } from "./beta-quantile.ts";
export { asF32, type F32, f32, numpyLog32 } from "./float32.ts";
export { addFlowNoise, addNoise, flowVelocity, velocity } from "./forward.ts";
export {
  combineGuidance,
  type GuidanceOptions,
  guidedNetwork,
  rescaleNoiseCfg,
} from "./guidance.ts";
export {
  betaSigmas,
  exponentialSigmas,
  interp,
  karrasSigmas,
  shiftSigmas,
  sigmaToTimestep,
  sigmaToTimestepF32,
  timestepToSigma,
} from "./ladders.ts";
export {
  conditionDropout,
  type LossWeighting,
  lossTarget,
  lossWeight,
  lossWeights,
  sampleFlowTimes,
  sampleLogNormalSigmas,
  sampleTimesteps,
  type TimestepSampling,
} from "./losses.ts";
export {
  type Denoised,
  type Denoiser,
  type DenoiserOptions,
  denoiser,
  edmDenoiser,
  estimate,
  flowLevel,
  inputDivisor,
  type Network,
  type NoiseLevel,
  type Preconditioning,
  type Prediction,
  pathOf,
  preconditioning,
  target,
  veLevel,
  vpLevel,
  vpLevelFromSigma,
} from "./parameterization.ts";
export {
  alphaBarFromSigma,
  alphasCumprod,
  type BetaScheduleConfig,
  type BetaScheduleKind,
  betaSchedule,
  betasForAlphaBar,
  cosineAlphaBar,
  expAlphaBar,
  karrasSigmasFromAlphaBar,
  linspace,
  type NoiseSchedule,
  type NoiseScheduleOptions,
  noiseSchedule,
  rescaleZeroTerminalSnr,
  snr,
  torchLinspace32,
} from "./schedules.ts";
export {
  arange,
  roundHalfEven,
  type SpacingOptions,
  spacedTimesteps,
  type TimestepSpacing,
} from "./spacing.ts";
export { type ClipOptions, clipX0, dynamicThreshold, quantile32, thresholdX0 } from "./thresholding.ts";
