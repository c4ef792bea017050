/**
 * Scheduler names people know (ddim, dpm++2m, euler-a, …) mapped onto diffusers scheduler classes,
 * configured from the model's own scheduler config (its betas, prediction type, timestep count).
 */
import { SCHEDULER_CLASSES } from "../samplers/diffusers-config.ts";
import { Scheduler } from "../samplers/scheduler.ts";

const SHORT: Record<string, { className: string; extra?: Record<string, unknown> }> = {
  ddpm: { className: "DDPMScheduler" },
  ddim: { className: "DDIMScheduler" },
  "dpm++2m": { className: "DPMSolverMultistepScheduler", extra: { algorithm_type: "dpmsolver++" } },
  "dpm++2m-sde": { className: "DPMSolverMultistepScheduler", extra: { algorithm_type: "sde-dpmsolver++" } },
  euler: { className: "EulerDiscreteScheduler" },
  "euler-a": { className: "EulerAncestralDiscreteScheduler" },
  heun: { className: "HeunDiscreteScheduler" },
  "flow-euler": { className: "FlowMatchEulerDiscreteScheduler" },
  lcm: { className: "LCMScheduler" },
};

const CLASSES: readonly string[] = SCHEDULER_CLASSES;

export const SCHEDULER_NAMES: readonly string[] = Object.keys(SHORT);

export type SchedulerChoice = { name: string; karras?: boolean } | { config: Record<string, unknown> };

/**
 * Keys every sampler takes from the model's scheduler config: the training schedule, and the x̂0
 * clipping the model's author chose (as diffusers' `from_config` carries it; without it DDIM would
 * fall back to its own default, clip_sample true, which wrecks guided samples of a model that was
 * not meant to be clipped: 44% vs 87% accuracy for the bundled MNIST model, DDIM 20, guidance 3).
 */
const SHARED = [
  "clip_sample",
  "clip_sample_range",
  "num_train_timesteps",
  "beta_start",
  "beta_end",
  "beta_schedule",
  "trained_betas",
  "prediction_type",
  "rescale_betas_zero_snr",
  "timestep_spacing",
  "steps_offset",
  "shift",
  // an LCM student's distillation grid and boundary scaling (other schedulers ignore them)
  "original_inference_steps",
  "timestep_scaling",
];

/** The training schedule's keys and their parsed names (BetaConfig, prediction type). */
const SCHEDULE_KEYS: readonly (readonly [string, string])[] = [
  ["num_train_timesteps", "numTrainTimesteps"],
  ["beta_start", "betaStart"],
  ["beta_end", "betaEnd"],
  ["beta_schedule", "betaSchedule"],
  ["prediction_type", "predictionType"],
];

/**
 * The model's scheduler config with its training schedule complete: a key it leaves out takes the
 * default of ITS class, as diffusers' `from_config` of a loaded scheduler's (full) config does — not the
 * default of the sampler it is handed to (LCMScheduler's betas 0.00085–0.012 for a DDPM config that
 * relies on DDPM's 0.0001–0.02). A config its class cannot parse is left as it is.
 */
function withClassDefaults(
  modelConfig: Readonly<Record<string, unknown>>,
): Readonly<Record<string, unknown>> {
  let parsed: Record<string, unknown>;
  try {
    parsed = Scheduler.fromConfig(modelConfig).config as unknown as Record<string, unknown>;
  } catch {
    return modelConfig;
  }
  const out: Record<string, unknown> = { ...modelConfig };
  for (const [key, field] of SCHEDULE_KEYS) {
    if (!(key in out) && parsed[field] !== undefined) out[key] = parsed[field];
  }
  return out;
}

/** A Scheduler for a short name, a diffusers class name, or a whole scheduler config. */
export function schedulerFor(
  choice: SchedulerChoice,
  modelConfig: Readonly<Record<string, unknown>>,
): Scheduler {
  if ("config" in choice) return Scheduler.fromConfig(choice.config);
  const key = choice.name.toLowerCase();
  const short = SHORT[key] ?? (CLASSES.includes(choice.name) ? { className: choice.name } : undefined);
  if (!short) {
    throw new Error(
      `unknown scheduler "${choice.name}"; use one of ${SCHEDULER_NAMES.join(", ")} or a diffusers class name (${CLASSES.join(", ")})`,
    );
  }
  const modelIsFlow = modelConfig["_class_name"] === "FlowMatchEulerDiscreteScheduler";
  const wantsFlow = short.className === "FlowMatchEulerDiscreteScheduler";
  // DPM-Solver++ also samples flow-matching models, on their own σ ladder (diffusers: use_flow_sigmas).
  const dpmOnFlow = modelIsFlow && short.className === "DPMSolverMultistepScheduler";
  if (modelIsFlow !== wantsFlow && !dpmOnFlow) {
    throw new Error(
      modelIsFlow
        ? `this model was trained with flow matching; use the scheduler flow-euler, dpm++2m or dpm++2m-sde, not ${choice.name}`
        : `the scheduler ${choice.name} needs a flow-matching model; this one was trained as ${String(modelConfig["_class_name"])}`,
    );
  }
  const cfg: Record<string, unknown> = { _class_name: short.className, ...short.extra };
  const own = withClassDefaults(modelConfig);
  for (const k of SHARED) if (k in own) cfg[k] = own[k];
  if (dpmOnFlow) {
    delete cfg["shift"];
    cfg["use_flow_sigmas"] = true;
    cfg["prediction_type"] = "flow_prediction";
    cfg["flow_shift"] = modelConfig["shift"] ?? 1.0;
  }
  if (choice.karras) {
    if (
      !["DPMSolverMultistepScheduler", "EulerDiscreteScheduler", "HeunDiscreteScheduler"].includes(
        short.className,
      )
    ) {
      throw new Error(`Karras sigmas apply to dpm++2m, dpm++2m-sde, euler and heun, not ${choice.name}`);
    }
    if (dpmOnFlow)
      throw new Error("Karras sigmas do not apply to a flow-matching model (it samples on flow sigmas)");
    cfg["use_karras_sigmas"] = true;
  }
  return Scheduler.fromConfig(cfg);
}
