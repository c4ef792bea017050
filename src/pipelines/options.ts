/**
 * The sampling options, once: a typed table of every option a generation takes (its range, whether
 * it is an integer, its human name), the one check that refuses a bad value, the defaults a model
 * recommends, and the `parameters` text written into PNGs. The CLI (`diffuse sample`), the studio's
 * request validation and the training previews all go through here, so a value one of them refuses
 * the others refuse too, with the same words. Messages name the option, never a flag or an HTTP
 * field: the CLI prefixes its flag, the studio answers 400 with the message as it is.
 */
import { join } from "node:path";
import type { LoadedPipeline } from "./pipeline-dir.ts";
import { SCHEDULER_NAMES, schedulerFor } from "./scheduler-names.ts";

/** Everything a generation takes besides the model and its condition. */
export interface SamplingOptions {
  /** A short name (dpm++2m, ddim, …) or a diffusers scheduler class name. */
  scheduler: string;
  /** Karras et al. (2022) σ spacing, for the samplers that take it. */
  karras: boolean;
  steps: number;
  /** Classifier-free guidance scale w (Ho & Salimans 2022): 1 = the conditional model alone. */
  guidance: number;
  /** φ of Lin et al. (2023), "Common Diffusion Noise Schedules…" §3.4: 0 = plain CFG. */
  guidanceRescale: number;
  /** DDIM's η (Song et al. 2021): 0 = deterministic, 1 = DDPM-like noise. */
  eta: number;
  seed: number;
}

export type SamplingField = keyof SamplingOptions;

export interface NumberRule {
  kind: "number";
  /** The name messages use. */
  name: string;
  min: number;
  max: number;
  integer: boolean;
}
export interface FlagRule {
  kind: "flag";
  name: string;
}
export interface NameRule {
  kind: "name";
  name: string;
}

type RuleFor<T> = [T] extends [number] ? NumberRule : [T] extends [boolean] ? FlagRule : NameRule;

/** One rule per option; the compiler refuses an option added to SamplingOptions without one. */
export const SAMPLING_OPTIONS: { readonly [K in SamplingField]: RuleFor<SamplingOptions[K]> } = {
  scheduler: { kind: "name", name: "scheduler" },
  karras: { kind: "flag", name: "karras" },
  steps: { kind: "number", name: "steps", min: 1, max: 1000, integer: true },
  guidance: { kind: "number", name: "guidance", min: 0, max: 50, integer: false },
  guidanceRescale: { kind: "number", name: "guidance rescale", min: 0, max: 1, integer: false },
  eta: { kind: "number", name: "eta", min: 0, max: 1, integer: false },
  // an unsigned 32-bit word (Rng takes up to 2^53; the CLI's batches use seed + k)
  seed: { kind: "number", name: "seed", min: 0, max: 2 ** 32 - 1, integer: true },
};

/**
 * The studio's resource limits: not properties of sampling but what one request to an interactive
 * server may ask for, so a job takes seconds or minutes (the CLI takes any count, in batches).
 */
export const STUDIO_LIMITS = {
  count: { kind: "number", name: "count", min: 1, max: 64, integer: true },
  size: { kind: "number", name: "size", min: 8, max: 128, integer: true },
} as const satisfies Record<string, NumberRule>;

/** A value an option refused; `field` says which (the CLI maps it to its flag). */
export class SamplingOptionError extends RangeError {
  override name = "SamplingOptionError";
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(message);
  }
}

const shown = (v: unknown): string => (typeof v === "number" ? String(v) : (JSON.stringify(v) ?? String(v)));

/** Checks a number against a rule: `steps must be an integer from 1 to 1000, got 5000`. */
export function checkNumber(field: string, rule: NumberRule, value: unknown): number {
  if (
    typeof value !== "number" ||
    !Number.isFinite(value) ||
    (rule.integer && !Number.isInteger(value)) ||
    value < rule.min ||
    value > rule.max
  ) {
    const kind = rule.integer ? "an integer" : "a number";
    throw new SamplingOptionError(
      field,
      `${rule.name} must be ${kind} from ${rule.min} to ${rule.max}, got ${shown(value)}`,
    );
  }
  return value;
}

/** Checks one option's value (already a number, boolean or string); throws SamplingOptionError. */
export function checkSamplingOption<K extends SamplingField>(field: K, value: unknown): SamplingOptions[K] {
  const rule: NumberRule | FlagRule | NameRule = SAMPLING_OPTIONS[field];
  if (rule.kind === "number") return checkNumber(field, rule, value) as SamplingOptions[K];
  if (rule.kind === "flag") {
    if (typeof value !== "boolean")
      throw new SamplingOptionError(field, `${rule.name} must be true or false, got ${shown(value)}`);
    return value as SamplingOptions[K];
  }
  if (typeof value !== "string" || value.trim() === "") {
    throw new SamplingOptionError(
      field,
      `${rule.name} must be a sampler name (${SCHEDULER_NAMES.join(", ")}) or a diffusers class name, got ${shown(value)}`,
    );
  }
  return value as SamplingOptions[K];
}

/**
 * Checks the options given (any may be missing) in table order; lay the result over defaults:
 * `{ ...samplingDefaults(pipe), ...checkSamplingOptions(given) }`.
 */
export function checkSamplingOptions(
  given: Readonly<Partial<Record<SamplingField, unknown>>>,
): Partial<SamplingOptions> {
  const out: Partial<Record<SamplingField, unknown>> = {};
  for (const field of Object.keys(SAMPLING_OPTIONS) as SamplingField[]) {
    const v = given[field];
    if (v !== undefined) out[field] = checkSamplingOption(field, v);
  }
  return out as Partial<SamplingOptions>;
}

/** The sampler diffuse picks for a model's training schedule when the model recommends none. */
export function defaultSchedulerName(schedulerConfig: Readonly<Record<string, unknown>>): string {
  return schedulerConfig["_class_name"] === "FlowMatchEulerDiscreteScheduler" ? "flow-euler" : "dpm++2m";
}

/**
 * Guidance for a class-conditional model that recommends none. 1.5 rather than the 3–7 of text
 * models: a small class-conditional model trained with label dropout already draws the right class
 * at w = 1.5 (the bundled MNIST U-Net: 99.2% accuracy), while stronger guidance trades away the
 * data's diversity (its Fréchet distance is 1.5× real-vs-real at 1.5 and 12× at 3).
 */
export const CLASS_GUIDANCE = 1.5;

/** Guidance for a text-to-image model that recommends none: Stable Diffusion's default. */
export const TEXT_GUIDANCE = 7.5;

/**
 * The options a generation starts from: the model's recommended scheduler, steps and guidance
 * (`sampling` in its diffuse.json, checked like any given value), else dpm++2m (flow-euler for a
 * flow-matching model), 20 steps, and guidance 1 for an unconditional model, TEXT_GUIDANCE for a
 * text-to-image one, else CLASS_GUIDANCE.
 */
export function samplingDefaults(
  pipe: Pick<LoadedPipeline, "dir" | "info" | "schedulerConfig" | "text">,
): SamplingOptions {
  const raw: unknown = pipe.info.sampling;
  const rec = (typeof raw === "object" && raw !== null ? raw : {}) as Record<string, unknown>;
  const where = join(pipe.dir, "diffuse.json");
  const recommended = <K extends "scheduler" | "steps" | "guidance">(
    field: K,
  ): SamplingOptions[K] | undefined => {
    if (rec[field] === undefined) return undefined;
    try {
      return checkSamplingOption(field, rec[field]);
    } catch (e) {
      throw new Error(`${where}: sampling.${field}: ${(e as Error).message}`);
    }
  };
  const scheduler = recommended("scheduler") ?? defaultSchedulerName(pipe.schedulerConfig);
  try {
    schedulerFor({ name: scheduler }, pipe.schedulerConfig);
  } catch (e) {
    throw new Error(`${where}: sampling.scheduler: ${(e as Error).message}`);
  }
  return {
    scheduler,
    karras: false,
    steps: recommended("steps") ?? 20,
    guidance:
      recommended("guidance") ??
      (pipe.text ? TEXT_GUIDANCE : pipe.info.numClasses === null ? 1 : CLASS_GUIDANCE),
    guidanceRescale: 0,
    eta: 0,
    seed: 0,
  };
}

/** What a `parameters` text says besides the sampling options. */
export interface ParametersContext {
  /** The model: a folder, or the studio's model id. */
  model?: string;
  /** The training step of a preview grid. */
  step?: number;
  /** Class labels: "all", the labels, or null for an unconditional model. */
  labels?: "all" | number | readonly number[] | null;
  /** Written after the sampling options, in order (count, size, per_label, …). */
  extra?: Readonly<Record<string, string | number>>;
}

/**
 * The `parameters` text of a PNG (the key image tools read generation settings from):
 * `model: mnist, labels: all, scheduler: dpm++2m (karras), steps: 20, guidance: 1.5,
 * guidance_rescale: 0, eta: 0, seed: 0, count: 10, size: 28`.
 */
export function parametersText(options: SamplingOptions, context: ParametersContext = {}): string {
  const parts: string[] = [];
  if (context.model !== undefined) parts.push(`model: ${context.model}`);
  if (context.step !== undefined) parts.push(`step: ${context.step}`);
  if (context.labels !== undefined) {
    const l = context.labels;
    parts.push(`labels: ${l === null ? "none" : typeof l === "object" ? l.join(",") : String(l)}`);
  }
  parts.push(
    `scheduler: ${options.scheduler}${options.karras ? " (karras)" : ""}`,
    `steps: ${options.steps}`,
    `guidance: ${options.guidance}`,
    `guidance_rescale: ${options.guidanceRescale}`,
    `eta: ${options.eta}`,
    `seed: ${options.seed}`,
  );
  for (const [k, v] of Object.entries(context.extra ?? {})) parts.push(`${k}: ${v}`);
  return parts.join(", ");
}
