/**
 * The distillation run config of `diffuse distill`: one JSON object (configs/mnist-lcm.json), defaults
 * in this file, CLI flags overriding single fields, the resolved config saved with the run. The
 * teacher is a pipeline folder (or a bundled model's name); the student starts as a copy of it.
 *
 *   method    "lcm" (consistency distillation; train/lcm.ts) or "reflow" (rectified flow; train/reflow.ts)
 *   teacher   the teacher's folder or name ("mnist"; reflow: a flow-matching teacher, "mnist-dit")
 *   lcm       solver_steps N, guidance ω, distance "huber" | "l2", huber_c, timestep_scaling κ,
 *             target "ema" | "online", ema_decay μ: with "ema" (LCM) the target network θ⁻ is the
 *             EMA of the student at a constant μ (0.95) and is what the run exports; with "online"
 *             (consistency models' CIFAR-10 distillation, iCT: μ = 0) θ⁻ = stopgrad(θ), and the EMA
 *             (μ with diffusers' warm-up, e.g. 0.999) is only the exported weights
 *   lora      null (default: the student is a full copy of the teacher) or { rank, alpha, targets }:
 *             LCM-LoRA — the student is the teacher's frozen weights plus trainable rank-r adapters
 *             (alpha: null = rank; targets: PEFT's target_modules, a list of layer names or a regular
 *             expression, null = the model class's default, lcm-lora.ts); only the adapters are
 *             trained, and the run exports them (pytorch_lora_weights.safetensors) beside the fused model
 *   reflow    pairs (how many (z, x) pairs the teacher's ODE makes), teacher_steps (its Euler steps),
 *             guidance ω (distilled in), seed (the pairs' noise), sigma_sampling "uniform" |
 *             "logit-normal" (logit_mean, logit_std) | "teacher" (as the teacher was trained),
 *             one_step_from (from this step on σ = 1 only: one-step distillation; null: never),
 *             cond_dropout, ema_decay (with warm-up; the EMA is what the run exports)
 *   data      dataset "mnist" | "folder" (+ path; LCM's images; reflow trains on its pairs) | "emoji";
 *             a text-to-image teacher (LCM in latent space, lcm-text.ts) takes captioned images:
 *             "emoji" (the emoji model's training split) or a caption "folder" (metadata.jsonl or
 *             .txt files beside the images); size: the images' side (default: the teacher's sample
 *             size, times the VAE's factor for a latent teacher)
 *   training  steps, batch_size, lr, lr_schedule, warmup_steps, AdamW fields, grad_clip, seed, threads
 *   output    checkpoint_every, sample_every (0: never), log_every, sample_steps (the preview's steps;
 *             reflow: also the exported model's recommended steps, default 1)
 */
import { loraTargets } from "../nn/lora.ts";
import type { LrScheduleName, TrainConfig } from "./config.ts";
import { LCM_DEFAULTS, type LcmSettings } from "./lcm.ts";
import { REFLOW_DEFAULTS, type ReflowSettings } from "./reflow.ts";

export type DistillMethod = "lcm" | "reflow";

/** LCM-LoRA's adapters: rank r, alpha (null: r), targets (null: the teacher's class's default). */
export interface DistillLora {
  rank: number;
  alpha: number | null;
  targets: string[] | string | null;
}

/** The fields of a `lora` section and their defaults (diffusers' LCM-LoRA rank 64, alpha = rank). */
export const DISTILL_LORA_DEFAULTS: DistillLora = { rank: 64, alpha: null, targets: null };

export interface DistillConfig {
  method: DistillMethod;
  teacher: string;
  lcm: {
    solver_steps: number;
    guidance: number;
    distance: "huber" | "l2";
    huber_c: number;
    timestep_scaling: number;
    target: "ema" | "online";
    ema_decay: number;
  };
  lora: DistillLora | null;
  reflow: {
    pairs: number;
    teacher_steps: number;
    guidance: number;
    seed: number;
    sigma_sampling: "uniform" | "logit-normal" | "teacher";
    logit_mean: number;
    logit_std: number;
    one_step_from: number | null;
    cond_dropout: number;
    ema_decay: number;
  };
  data: { dataset: "mnist" | "folder" | "emoji"; path: string | null; size: number | null };
  training: {
    steps: number;
    batch_size: number;
    lr: number;
    lr_schedule: LrScheduleName;
    warmup_steps: number;
    weight_decay: number;
    adam_beta1: number;
    adam_beta2: number;
    adam_eps: number;
    grad_clip: number | null;
    seed: number;
    threads: number | null;
  };
  output: { checkpoint_every: number; sample_every: number; log_every: number; sample_steps: number };
}

export const DISTILL_DEFAULTS: Omit<DistillConfig, "teacher"> = {
  method: "lcm",
  lcm: {
    solver_steps: LCM_DEFAULTS.solverSteps,
    guidance: LCM_DEFAULTS.guidance,
    distance: LCM_DEFAULTS.distance,
    huber_c: LCM_DEFAULTS.huberC,
    timestep_scaling: LCM_DEFAULTS.timestepScaling,
    target: "ema",
    ema_decay: 0.95,
  },
  lora: null,
  reflow: {
    pairs: REFLOW_DEFAULTS.pairs,
    teacher_steps: REFLOW_DEFAULTS.teacherSteps,
    guidance: REFLOW_DEFAULTS.guidance,
    seed: REFLOW_DEFAULTS.seed,
    sigma_sampling: "uniform",
    logit_mean: 0,
    logit_std: 1,
    one_step_from: null,
    cond_dropout: 0,
    ema_decay: 0.999,
  },
  data: { dataset: "mnist", path: null, size: null },
  training: {
    steps: 2000,
    batch_size: 64,
    lr: 2e-4,
    lr_schedule: "constant",
    warmup_steps: 50,
    weight_decay: 0,
    adam_beta1: 0.9,
    adam_beta2: 0.999,
    adam_eps: 1e-8,
    grad_clip: 1,
    seed: 0,
    threads: null,
  },
  output: { checkpoint_every: 500, sample_every: 500, log_every: 10, sample_steps: 4 },
};

/** A reflow student's recommended steps (and preview steps) unless output.sample_steps says otherwise. */
export const REFLOW_SAMPLE_STEPS = 1;

/** The most pairs a run may ask for (they are held in memory: 28×28 pairs take 6.3 kB each). */
export const MAX_REFLOW_PAIRS = 500_000;

export class DistillConfigError extends Error {
  override name = "DistillConfigError";
}

type Json = Record<string, unknown>;
const isObj = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);
const isInt = (v: unknown, min: number): boolean => typeof v === "number" && Number.isInteger(v) && v >= min;
const isNum = (v: unknown, lo: number, hi: number): boolean =>
  typeof v === "number" && Number.isFinite(v) && v >= lo && v <= hi;

function section<T extends object>(name: string, given: unknown, defaults: T): T {
  if (given === undefined) return { ...defaults };
  if (!isObj(given)) throw new DistillConfigError(`distill config field "${name}" must be an object`);
  for (const k of Object.keys(given))
    if (!(k in defaults))
      throw new DistillConfigError(
        `unknown distill config field "${name}.${k}"; known fields: ${Object.keys(defaults).join(", ")}`,
      );
  return { ...defaults, ...(given as Partial<T>) };
}

function check(ok: boolean, field: string, want: string, got: unknown): void {
  if (!ok)
    throw new DistillConfigError(
      `distill config field "${field}" must be ${want}, got ${JSON.stringify(got)}`,
    );
}

const TOP = ["method", "teacher", "lcm", "lora", "reflow", "data", "training", "output"];

/** Fills defaults and checks every field; errors name the field, what it must be and what was given. */
export function resolveDistillConfig(raw: Json): DistillConfig {
  for (const k of Object.keys(raw))
    if (!TOP.includes(k))
      throw new DistillConfigError(`unknown distill config field "${k}"; fields: ${TOP.join(", ")}`);
  const method = raw["method"] ?? DISTILL_DEFAULTS.method;
  check(method === "lcm" || method === "reflow", "method", '"lcm" or "reflow"', method);
  const teacher = raw["teacher"];
  check(
    typeof teacher === "string" && teacher !== "",
    "teacher",
    "the teacher's pipeline folder or a bundled model's name (--teacher DIR)",
    teacher,
  );
  const lcm = section("lcm", raw["lcm"], DISTILL_DEFAULTS.lcm);
  const data = section("data", raw["data"], DISTILL_DEFAULTS.data);
  const training = section("training", raw["training"], DISTILL_DEFAULTS.training);
  const output = section(
    "output",
    raw["output"],
    method === "reflow"
      ? { ...DISTILL_DEFAULTS.output, sample_steps: REFLOW_SAMPLE_STEPS }
      : DISTILL_DEFAULTS.output,
  );
  const reflow = section("reflow", raw["reflow"], DISTILL_DEFAULTS.reflow);
  check(isInt(lcm.solver_steps, 1), "lcm.solver_steps", "an integer ≥ 1 (LCM: 50)", lcm.solver_steps);
  check(isNum(lcm.guidance, 0, 50), "lcm.guidance", "a number from 0 to 50 (1: no guidance)", lcm.guidance);
  check(lcm.distance === "huber" || lcm.distance === "l2", "lcm.distance", '"huber" or "l2"', lcm.distance);
  check(isNum(lcm.huber_c, 1e-9, 10), "lcm.huber_c", "a small positive number (LCM: 0.001)", lcm.huber_c);
  check(
    isNum(lcm.timestep_scaling, 1e-6, 1e6),
    "lcm.timestep_scaling",
    "a positive number",
    lcm.timestep_scaling,
  );
  check(lcm.target === "ema" || lcm.target === "online", "lcm.target", '"ema" or "online"', lcm.target);
  check(isNum(lcm.ema_decay, 0, 0.999999), "lcm.ema_decay", "a number in [0, 1) (LCM: 0.95)", lcm.ema_decay);
  check(
    data.dataset === "mnist" || data.dataset === "folder" || data.dataset === "emoji",
    "data.dataset",
    '"mnist", "folder" or "emoji" (captioned images, for a text-to-image teacher)',
    data.dataset,
  );
  check(
    data.dataset !== "folder" || typeof data.path === "string",
    "data.path",
    "a folder path for dataset folder",
    data.path,
  );
  check(
    data.size === null || isInt(data.size, 8),
    "data.size",
    "an integer ≥ 8, or null (the teacher's)",
    data.size,
  );
  const t = training;
  check(isInt(t.steps, 1), "training.steps", "an integer ≥ 1", t.steps);
  check(isInt(t.batch_size, 1), "training.batch_size", "an integer ≥ 1", t.batch_size);
  check(isNum(t.lr, 0, 1), "training.lr", "a number in [0, 1]", t.lr);
  check(
    ["constant", "cosine", "linear"].includes(t.lr_schedule),
    "training.lr_schedule",
    '"constant", "cosine" or "linear"',
    t.lr_schedule,
  );
  check(isInt(t.warmup_steps, 0), "training.warmup_steps", "an integer ≥ 0", t.warmup_steps);
  check(isNum(t.weight_decay, 0, 1), "training.weight_decay", "a number in [0, 1]", t.weight_decay);
  check(isNum(t.adam_beta1, 0, 0.999999), "training.adam_beta1", "a number in [0, 1)", t.adam_beta1);
  check(isNum(t.adam_beta2, 0, 0.999999999), "training.adam_beta2", "a number in [0, 1)", t.adam_beta2);
  check(isNum(t.adam_eps, 0, 1), "training.adam_eps", "a small positive number", t.adam_eps);
  check(
    t.grad_clip === null || isNum(t.grad_clip, 1e-9, 1e9),
    "training.grad_clip",
    "a positive number or null",
    t.grad_clip,
  );
  check(isInt(t.seed, 0), "training.seed", "an integer ≥ 0", t.seed);
  check(t.threads === null || isInt(t.threads, 1), "training.threads", "an integer ≥ 1 or null", t.threads);
  check(
    isInt(output.checkpoint_every, 1),
    "output.checkpoint_every",
    "an integer ≥ 1",
    output.checkpoint_every,
  );
  check(
    isInt(output.sample_every, 0),
    "output.sample_every",
    "an integer ≥ 0 (0: never)",
    output.sample_every,
  );
  check(isInt(output.log_every, 1), "output.log_every", "an integer ≥ 1", output.log_every);
  if (method === "lcm")
    check(
      isInt(output.sample_steps, 1) && output.sample_steps <= lcm.solver_steps,
      "output.sample_steps",
      `an integer from 1 to lcm.solver_steps (${lcm.solver_steps})`,
      output.sample_steps,
    );
  else
    check(
      isInt(output.sample_steps, 1) && output.sample_steps <= 1000,
      "output.sample_steps",
      "an integer from 1 to 1000 (a reflow student: 1 or 2)",
      output.sample_steps,
    );
  checkReflow(reflow, t);
  const m = method as DistillMethod;
  const lora = resolveLora(raw["lora"], m);
  return { method: m, teacher: teacher as string, lcm, lora, reflow, data, training, output };
}

/** The `lora` section: null (a full student) or rank, alpha and targets, checked. */
function resolveLora(given: unknown, method: DistillMethod): DistillLora | null {
  if (given === undefined || given === null) return null;
  check(
    method === "lcm",
    "lora",
    'null for method "reflow" (LoRA students are distilled with method "lcm")',
    given,
  );
  const l = section("lora", given, DISTILL_LORA_DEFAULTS);
  check(isInt(l.rank, 1), "lora.rank", "an integer ≥ 1 (diffusers' LCM-LoRA: 64)", l.rank);
  check(
    l.alpha === null || isNum(l.alpha, 1e-6, 1e6),
    "lora.alpha",
    "a positive number or null (= rank)",
    l.alpha,
  );
  const t = l.targets;
  const list = Array.isArray(t) && t.length > 0 && t.every((x) => typeof x === "string" && x !== "");
  check(
    t === null || list || (typeof t === "string" && t !== ""),
    "lora.targets",
    'a list of layer names (PEFT\'s target_modules, e.g. ["to_q", "conv1"]), a regular expression, or null (the default)',
    t,
  );
  if (typeof t === "string")
    try {
      loraTargets(t);
    } catch (e) {
      throw new DistillConfigError(`distill config field "lora.targets": ${(e as Error).message}`);
    }
  return { rank: l.rank, alpha: l.alpha, targets: Array.isArray(t) ? [...t] : t };
}

function checkReflow(r: DistillConfig["reflow"], t: DistillConfig["training"]): void {
  check(
    isInt(r.pairs, 1) && r.pairs >= t.batch_size && r.pairs <= MAX_REFLOW_PAIRS,
    "reflow.pairs",
    `an integer from training.batch_size (${t.batch_size}) to ${MAX_REFLOW_PAIRS}: the (noise, image) pairs the teacher makes`,
    r.pairs,
  );
  check(
    isInt(r.teacher_steps, 1) && r.teacher_steps <= 1000,
    "reflow.teacher_steps",
    "an integer from 1 to 1000 (the teacher's Euler steps per pair; 20 is plenty for MNIST)",
    r.teacher_steps,
  );
  check(isNum(r.guidance, 0, 50), "reflow.guidance", "a number from 0 to 50 (1: no guidance)", r.guidance);
  check(isInt(r.seed, 0), "reflow.seed", "an integer ≥ 0 (the pairs' noise and labels)", r.seed);
  check(
    ["uniform", "logit-normal", "teacher"].includes(r.sigma_sampling),
    "reflow.sigma_sampling",
    '"uniform", "logit-normal" or "teacher" (as the teacher was trained)',
    r.sigma_sampling,
  );
  check(isNum(r.logit_mean, -10, 10), "reflow.logit_mean", "a number from −10 to 10", r.logit_mean);
  check(isNum(r.logit_std, 1e-3, 10), "reflow.logit_std", "a number from 0.001 to 10", r.logit_std);
  check(
    r.one_step_from === null || (isInt(r.one_step_from, 0) && r.one_step_from < t.steps),
    "reflow.one_step_from",
    `null (never), or the step from which training is at σ = 1 only, below training.steps (${t.steps})`,
    r.one_step_from,
  );
  check(
    isNum(r.cond_dropout, 0, 0.999),
    "reflow.cond_dropout",
    "a number in [0, 1) (0: none)",
    r.cond_dropout,
  );
  check(isNum(r.ema_decay, 0, 0.999999), "reflow.ema_decay", "a number in [0, 1) (e.g. 0.999)", r.ema_decay);
}

/** The LCM objective's settings of a config. */
export function lcmSettings(c: DistillConfig): LcmSettings {
  return {
    solverSteps: c.lcm.solver_steps,
    guidance: c.lcm.guidance,
    distance: c.lcm.distance,
    huberC: c.lcm.huber_c,
    timestepScaling: c.lcm.timestep_scaling,
  };
}

/** The reflow settings of a config (the pairs' and the σ sampling's; train/reflow.ts). */
export function reflowSettings(c: DistillConfig): ReflowSettings {
  const r = c.reflow;
  return {
    pairs: r.pairs,
    teacherSteps: r.teacher_steps,
    guidance: r.guidance,
    seed: r.seed,
    sigmaSampling: r.sigma_sampling,
    logitMean: r.logit_mean,
    logitStd: r.logit_std,
    oneStepFrom: r.one_step_from,
    condDropout: r.cond_dropout,
  };
}

/**
 * The run as the checkpoint code sees a training run (train/checkpoint.ts): the teacher's model and
 * scheduler configs, the data and training fields, and the method's settings (lcm or reflow), so a
 * resume with anything changed but the step count, threads or output is refused.
 */
export function checkpointView(
  c: DistillConfig,
  model: Record<string, unknown>,
  scheduler: Record<string, unknown>,
  size: number,
  channels: number,
): TrainConfig {
  const reflow = c.method === "reflow";
  const view: TrainConfig & {
    distill: Partial<Pick<DistillConfig, "method" | "lcm" | "lora" | "reflow">>;
  } = {
    model,
    scheduler,
    data: { dataset: c.data.dataset, path: c.data.path, size, channels, captions: null },
    training: {
      ...c.training,
      ema_decay: reflow ? c.reflow.ema_decay : c.lcm.ema_decay,
      cond_dropout: reflow ? c.reflow.cond_dropout : 0,
      loss_weighting: "uniform",
      snr_gamma: 0,
      timestep_sampling: "uniform",
      logit_mean: 0,
      logit_std: 1,
    },
    output: { ...c.output, sample_guidance: 1 },
    // (an LCM run's view is as it was before reflow and LoRA existed: its checkpoints still resume)
    distill: reflow
      ? { method: c.method, reflow: c.reflow }
      : { method: c.method, lcm: c.lcm, ...(c.lora ? { lora: c.lora } : {}) },
  };
  return view;
}
