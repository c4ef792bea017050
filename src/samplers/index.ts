/**
 * Samplers: one pure function per algorithm over the one denoiser type, and `Scheduler`, the
 * diffusers-compatible layer that maps a diffusers scheduler config onto them.
 */

export { type DdimOptions, ddim, ddimVariance } from "./ddim.ts";
export { type DdpmOptions, type DdpmVariance, ddpm } from "./ddpm.ts";
export {
  type PredictionType,
  parseSchedulerConfig,
  SCHEDULER_CLASSES,
  type SchedulerClass,
  type SchedulerConfig,
  type SigmaSchedule,
} from "./diffusers-config.ts";
export { type Plan, planFor } from "./diffusers-plans.ts";
export {
  type DpmAlgorithm,
  type DpmSolverOptions,
  dpmSolver,
  dpmSolverPP2M,
  sdeDpmSolverPP2M,
} from "./dpm-solver.ts";
export { type Churn, type EulerOptions, euler, eulerStep } from "./euler.ts";
export { ancestralSigmas, eulerAncestral } from "./euler-ancestral.ts";
export { type FlowMatchEulerOptions, flowMatchEuler } from "./flow-match-euler.ts";
export { heun } from "./heun.ts";
export { type LcmOptions, lcm, lcmScalings } from "./lcm.ts";
export { type FromConfigOptions, type SampleOptions, Scheduler } from "./scheduler.ts";
export {
  type AlphaBarStep,
  drawNoise,
  gaussianNoise,
  type NoiseFn,
  type OnStep,
  type SamplerOptions,
  type SigmaLevel,
  type StepInfo,
  type StochasticOptions,
} from "./types.ts";
