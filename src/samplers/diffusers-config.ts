/**
 * The diffusers scheduler configs this library reads (diffusers v0.40 key names and defaults), mapped to
 * camelCase types with string unions where diffusers has sets of flags (`use_karras_sigmas`,
 * `use_exponential_sigmas`, … become one `sigmaSchedule`). Every key these classes read is honoured,
 * unknown keys are ignored, and bad values or combinations are rejected with a clear error.
 */

import type { BetaScheduleKind } from "../diffusion/schedules.ts";
import type { TimestepSpacing } from "../diffusion/spacing.ts";
import { ConfigReader, type Json } from "./config-reader.ts";
import type { DdpmVariance } from "./ddpm.ts";

export const SCHEDULER_CLASSES = [
  "DDPMScheduler",
  "DDIMScheduler",
  "DPMSolverMultistepScheduler",
  "EulerDiscreteScheduler",
  "EulerAncestralDiscreteScheduler",
  "HeunDiscreteScheduler",
  "FlowMatchEulerDiscreteScheduler",
  "LCMScheduler",
] as const;
export type SchedulerClass = (typeof SCHEDULER_CLASSES)[number];

/** diffusers' prediction_type values. */
export type PredictionType = "epsilon" | "sample" | "v_prediction" | "flow_prediction";
export type SigmaSchedule = "interpolated" | "karras" | "exponential" | "beta" | "lu" | "flow";

export interface BetaConfig {
  numTrainTimesteps: number;
  betaStart: number;
  betaEnd: number;
  betaSchedule: BetaScheduleKind;
  trainedBetas: number[] | null;
  rescaleBetasZeroSnr: boolean;
}

interface Thresholding {
  thresholding: boolean;
  dynamicThresholdingRatio: number;
  sampleMaxValue: number;
}

export interface DdpmConfig extends BetaConfig, Thresholding {
  className: "DDPMScheduler";
  varianceType: DdpmVariance;
  clipSample: boolean;
  clipSampleRange: number;
  predictionType: PredictionType;
  timestepSpacing: TimestepSpacing;
  stepsOffset: number;
}

export interface DdimConfig extends BetaConfig, Thresholding {
  className: "DDIMScheduler";
  clipSample: boolean;
  clipSampleRange: number;
  setAlphaToOne: boolean;
  predictionType: PredictionType;
  timestepSpacing: TimestepSpacing;
  stepsOffset: number;
}

export interface DpmSolverConfig extends BetaConfig, Thresholding {
  className: "DPMSolverMultistepScheduler";
  solverOrder: 1 | 2 | 3;
  predictionType: PredictionType;
  algorithmType: "dpmsolver++" | "sde-dpmsolver++" | "dpmsolver" | "sde-dpmsolver";
  solverType: "midpoint" | "heun";
  lowerOrderFinal: boolean;
  eulerAtFinal: boolean;
  sigmaSchedule: SigmaSchedule;
  flowShift: number;
  finalSigmasType: "zero" | "sigma_min";
  lambdaMinClipped: number;
  varianceType: "learned" | "learned_range" | null;
  timestepSpacing: TimestepSpacing;
  stepsOffset: number;
}

export interface EulerConfig extends BetaConfig {
  className: "EulerDiscreteScheduler";
  predictionType: PredictionType;
  interpolationType: "linear" | "log_linear";
  sigmaSchedule: SigmaSchedule;
  sigmaMin: number | null;
  sigmaMax: number | null;
  timestepSpacing: TimestepSpacing;
  timestepType: "discrete" | "continuous";
  stepsOffset: number;
  finalSigmasType: "zero" | "sigma_min";
}

export interface EulerAncestralConfig extends BetaConfig {
  className: "EulerAncestralDiscreteScheduler";
  predictionType: PredictionType;
  timestepSpacing: TimestepSpacing;
  stepsOffset: number;
}

export interface HeunConfig extends BetaConfig {
  className: "HeunDiscreteScheduler";
  predictionType: PredictionType;
  sigmaSchedule: SigmaSchedule;
  clipSample: boolean;
  clipSampleRange: number;
  timestepSpacing: TimestepSpacing;
  stepsOffset: number;
}

export interface FlowMatchConfig {
  className: "FlowMatchEulerDiscreteScheduler";
  numTrainTimesteps: number;
  shift: number;
  shiftTerminal: number | null;
  sigmaSchedule: SigmaSchedule;
  invertSigmas: boolean;
  stochasticSampling: boolean;
}

export interface LcmConfig extends BetaConfig, Thresholding {
  className: "LCMScheduler";
  originalInferenceSteps: number;
  clipSample: boolean;
  clipSampleRange: number;
  setAlphaToOne: boolean;
  stepsOffset: number;
  predictionType: PredictionType;
  timestepSpacing: TimestepSpacing;
  timestepScaling: number;
}

export type SchedulerConfig =
  | DdpmConfig
  | DdimConfig
  | DpmSolverConfig
  | EulerConfig
  | EulerAncestralConfig
  | HeunConfig
  | FlowMatchConfig
  | LcmConfig;

const SPACINGS: readonly TimestepSpacing[] = ["linspace", "leading", "trailing"];
const BASIC_BETAS: readonly BetaScheduleKind[] = ["linear", "scaled_linear", "squaredcos_cap_v2"];
const VP_PREDICTIONS: readonly PredictionType[] = ["epsilon", "sample", "v_prediction"];

/**
 * The most training timesteps a config may name: diffusers' schedulers train with 1,000 (a few models
 * 2,000–4,000); the schedules are computed per timestep on the host, so a hostile count
 * (2,147,483,647) would otherwise allocate gigabytes and compute for minutes.
 */
export const MAX_TRAIN_TIMESTEPS = 100_000;

function betas(
  r: ConfigReader,
  allowed: readonly BetaScheduleKind[],
  defaults: [number, number, BetaScheduleKind],
  rescale = true,
): BetaConfig {
  const numTrainTimesteps = r.int("num_train_timesteps", 1000, 1, MAX_TRAIN_TIMESTEPS);
  const trainedBetas = r.numberArray("trained_betas");
  if (trainedBetas && trainedBetas.length !== numTrainTimesteps) {
    r.fail("trained_betas", `an array of num_train_timesteps (${numTrainTimesteps}) betas`);
  }
  return {
    numTrainTimesteps,
    betaStart: r.number("beta_start", defaults[0], { above: 0 }),
    betaEnd: r.number("beta_end", defaults[1], { above: 0 }),
    // With trained_betas the schedule name is not used to build betas (diffusers does not check it).
    betaSchedule:
      trainedBetas && !allowed.includes(r.json["beta_schedule"] as BetaScheduleKind)
        ? defaults[2]
        : r.oneOf("beta_schedule", allowed, defaults[2]),
    trainedBetas,
    rescaleBetasZeroSnr: rescale ? r.bool("rescale_betas_zero_snr", false) : false,
  };
}

function thresholding(r: ConfigReader): Thresholding {
  return {
    thresholding: r.bool("thresholding", false),
    dynamicThresholdingRatio: r.number("dynamic_thresholding_ratio", 0.995, { min: 0, max: 1 }),
    sampleMaxValue: r.number("sample_max_value", 1.0, { above: 0 }),
  };
}

/** The one sigma schedule selected by diffusers' flags (`order` is its precedence). */
function sigmaSchedule(r: ConfigReader, flags: readonly [string, SigmaSchedule][]): SigmaSchedule {
  const on = flags.filter(([key]) => r.bool(key, false));
  const exclusive = on.filter(([, s]) => s === "karras" || s === "exponential" || s === "beta");
  if (exclusive.length > 1) {
    throw new Error(
      `${r.className} config: only one of ${exclusive.map(([k]) => k).join(", ")} can be true; choose one`,
    );
  }
  return on[0]?.[1] ?? "interpolated";
}

const K: [string, SigmaSchedule] = ["use_karras_sigmas", "karras"];
const E: [string, SigmaSchedule] = ["use_exponential_sigmas", "exponential"];
const B: [string, SigmaSchedule] = ["use_beta_sigmas", "beta"];

function rejectDynamicShifting(r: ConfigReader): void {
  if (r.bool("use_dynamic_shifting", false)) {
    throw new Error(
      `${r.className} config: use_dynamic_shifting=true needs the resolution-dependent shift mu at ` +
        "set_timesteps, which Scheduler.sample does not take; set use_dynamic_shifting=false and a fixed shift",
    );
  }
}

/** Parses and validates a diffusers scheduler config of `className`. */
export function parseSchedulerConfig(json: Json, className: SchedulerClass): SchedulerConfig {
  const r = new ConfigReader(json, className);
  switch (className) {
    case "DDPMScheduler": {
      if (json["variance_type"] === "fixed_large_log") {
        r.fail(
          "variance_type",
          'not "fixed_large_log" (diffusers takes √ of its log-variance: NaN); use "fixed_large"',
        );
      }
      const varianceType = r.oneOf(
        "variance_type",
        ["fixed_small", "fixed_small_log", "fixed_large", "learned", "learned_range"] as const,
        "fixed_small",
      );
      return {
        className,
        ...betas(r, [...BASIC_BETAS, "sigmoid"], [0.0001, 0.02, "linear"]),
        ...thresholding(r),
        varianceType,
        clipSample: r.bool("clip_sample", true),
        clipSampleRange: r.number("clip_sample_range", 1.0, { above: 0 }),
        predictionType: r.oneOf("prediction_type", VP_PREDICTIONS, "epsilon"),
        timestepSpacing: r.oneOf("timestep_spacing", SPACINGS, "leading"),
        stepsOffset: r.int("steps_offset", 0),
      };
    }
    case "DDIMScheduler":
      return {
        className,
        ...betas(r, BASIC_BETAS, [0.0001, 0.02, "linear"]),
        ...thresholding(r),
        clipSample: r.bool("clip_sample", true),
        clipSampleRange: r.number("clip_sample_range", 1.0, { above: 0 }),
        setAlphaToOne: r.bool("set_alpha_to_one", true),
        predictionType: r.oneOf("prediction_type", VP_PREDICTIONS, "epsilon"),
        timestepSpacing: r.oneOf("timestep_spacing", SPACINGS, "leading"),
        stepsOffset: r.int("steps_offset", 0),
      };
    case "DPMSolverMultistepScheduler":
      return parseDpmSolver(r);
    case "EulerDiscreteScheduler":
      return {
        className,
        ...betas(r, BASIC_BETAS, [0.0001, 0.02, "linear"]),
        predictionType: r.oneOf("prediction_type", VP_PREDICTIONS, "epsilon", { original_sample: "sample" }),
        interpolationType: r.oneOf("interpolation_type", ["linear", "log_linear"] as const, "linear"),
        sigmaSchedule: sigmaSchedule(r, [K, E, B]),
        sigmaMin: r.nullableNumber("sigma_min", { above: 0 }),
        sigmaMax: r.nullableNumber("sigma_max", { above: 0 }),
        timestepSpacing: r.oneOf("timestep_spacing", SPACINGS, "linspace"),
        timestepType: r.oneOf("timestep_type", ["discrete", "continuous"] as const, "discrete"),
        stepsOffset: r.int("steps_offset", 0),
        finalSigmasType: r.oneOf("final_sigmas_type", ["zero", "sigma_min"] as const, "zero"),
      };
    case "EulerAncestralDiscreteScheduler":
      return {
        className,
        ...betas(r, BASIC_BETAS, [0.0001, 0.02, "linear"]),
        predictionType: r.oneOf("prediction_type", ["epsilon", "v_prediction"] as const, "epsilon"),
        timestepSpacing: r.oneOf("timestep_spacing", SPACINGS, "linspace"),
        stepsOffset: r.int("steps_offset", 0),
      };
    case "HeunDiscreteScheduler":
      return {
        className,
        ...betas(r, [...BASIC_BETAS, "exp"], [0.00085, 0.012, "linear"], false),
        predictionType: r.oneOf("prediction_type", VP_PREDICTIONS, "epsilon"),
        sigmaSchedule: sigmaSchedule(r, [K, E, B]),
        clipSample: r.bool("clip_sample", false),
        clipSampleRange: r.number("clip_sample_range", 1.0, { above: 0 }),
        timestepSpacing: r.oneOf("timestep_spacing", SPACINGS, "linspace"),
        stepsOffset: r.int("steps_offset", 0),
      };
    case "FlowMatchEulerDiscreteScheduler": {
      rejectDynamicShifting(r);
      r.oneOf("time_shift_type", ["exponential", "linear"] as const, "exponential");
      const shiftTerminal = r.nullableNumber("shift_terminal");
      if (shiftTerminal !== null && !(shiftTerminal >= 0 && shiftTerminal < 1))
        r.fail("shift_terminal", "in [0, 1)");
      const schedule = sigmaSchedule(r, [K, E, B]);
      return {
        className,
        numTrainTimesteps: r.int("num_train_timesteps", 1000, 1, MAX_TRAIN_TIMESTEPS),
        shift: r.number("shift", 1.0, { above: 0 }),
        shiftTerminal,
        sigmaSchedule: schedule === "interpolated" ? "flow" : schedule,
        invertSigmas: r.bool("invert_sigmas", false),
        stochasticSampling: r.bool("stochastic_sampling", false),
      };
    }
    case "LCMScheduler":
      return {
        className,
        ...betas(r, BASIC_BETAS, [0.00085, 0.012, "scaled_linear"]),
        ...thresholding(r),
        originalInferenceSteps: r.int("original_inference_steps", 50, 1),
        clipSample: r.bool("clip_sample", false),
        clipSampleRange: r.number("clip_sample_range", 1.0, { above: 0 }),
        setAlphaToOne: r.bool("set_alpha_to_one", true),
        stepsOffset: r.int("steps_offset", 0),
        predictionType: r.oneOf("prediction_type", VP_PREDICTIONS, "epsilon"),
        timestepSpacing: r.oneOf("timestep_spacing", SPACINGS, "leading"),
        timestepScaling: r.number("timestep_scaling", 10.0),
      };
  }
}

function parseDpmSolver(r: ConfigReader): DpmSolverConfig {
  rejectDynamicShifting(r);
  r.oneOf("time_shift_type", ["exponential", "linear"] as const, "exponential");
  const solverOrder = r.int("solver_order", 2);
  if (solverOrder !== 1 && solverOrder !== 2 && solverOrder !== 3) r.fail("solver_order", "1, 2 or 3");
  const algorithmType = r.oneOf(
    "algorithm_type",
    ["dpmsolver++", "sde-dpmsolver++", "dpmsolver", "sde-dpmsolver"] as const,
    "dpmsolver++",
    { deis: "dpmsolver++" },
  );
  const solverType = r.oneOf("solver_type", ["midpoint", "heun"] as const, "midpoint", {
    logrho: "midpoint",
    bh1: "midpoint",
    bh2: "midpoint",
  });
  const finalSigmasType = r.oneOf("final_sigmas_type", ["zero", "sigma_min"] as const, "zero");
  if (!algorithmType.endsWith("++") && finalSigmasType === "zero") {
    r.fail(
      "final_sigmas_type",
      `"sigma_min" with algorithm_type ${algorithmType} ("zero" needs a ++ solver)`,
    );
  }
  if (algorithmType.startsWith("sde-") && solverOrder === 3) {
    r.fail("solver_order", `1 or 2 with algorithm_type ${algorithmType} (it has no third-order update)`);
  }
  const schedule = sigmaSchedule(r, [K, ["use_lu_lambdas", "lu"], E, B, ["use_flow_sigmas", "flow"]]);
  const flowSigmas = r.bool("use_flow_sigmas", false);
  if (flowSigmas && schedule !== "flow") {
    r.fail("use_flow_sigmas", `false together with the ${schedule} sigma schedule`);
  }
  const predictionType = r.oneOf("prediction_type", [...VP_PREDICTIONS, "flow_prediction"], "epsilon");
  if ((predictionType === "flow_prediction") !== flowSigmas) {
    r.fail(
      "prediction_type",
      flowSigmas
        ? '"flow_prediction" with use_flow_sigmas=true'
        : "not flow_prediction without use_flow_sigmas",
    );
  }
  return {
    className: "DPMSolverMultistepScheduler",
    ...betas(r, BASIC_BETAS, [0.0001, 0.02, "linear"]),
    ...thresholding(r),
    solverOrder,
    predictionType,
    algorithmType,
    solverType,
    lowerOrderFinal: r.bool("lower_order_final", true),
    eulerAtFinal: r.bool("euler_at_final", false),
    sigmaSchedule: schedule,
    flowShift: r.number("flow_shift", 1.0, { above: 0 }),
    finalSigmasType,
    lambdaMinClipped: r.extendedNumber("lambda_min_clipped", Number.NEGATIVE_INFINITY),
    varianceType: r.nullableOneOf("variance_type", ["learned", "learned_range"] as const),
    timestepSpacing: r.oneOf("timestep_spacing", SPACINGS, "linspace"),
    stepsOffset: r.int("steps_offset", 0),
  };
}
