/**
 * The training run config: one JSON file (configs/mnist.json is the default), defaults in this file,
 * CLI flags overriding single fields (`--set training.lr=3e-4`), and the resolved config saved with
 * the run. `model` is the diffusers config of any registered denoiser (by its `_class_name`:
 * UNet2DModel, DiTTransformer2DModel, …) and `scheduler` a diffusers scheduler config,
 * so both travel to diffusers unchanged.
 */
import type { DiffusersConfig } from "../models/config-fields.ts";
import { DENOISER_CLASS_NAMES, resolveDenoiser } from "../models/registry.ts";
import { checkSamplingOption } from "../pipelines/options.ts";
import {
  type ControlNetTrainConfig,
  controlNetSection,
  type FinetuneConfig,
  finetuneSection,
} from "./config-adapt.ts";
import { ConfigFieldError, check, isInt, isNum, isObj, type Json, section } from "./config-check.ts";

export { ConfigFieldError, isObj, type Json } from "./config-check.ts";

export type LossWeightingName = "uniform" | "min-snr" | "edm";
export type LrScheduleName = "constant" | "cosine" | "linear";
export type TimestepSamplingName = "uniform" | "logit-normal";

export interface TrainConfig {
  model: DiffusersConfig;
  scheduler: Record<string, unknown>;
  /**
   * Text to image (a UNet2DConditionModel or an SD3Transformer2DModel): the text encoder's config
   * (transformers' CLIPTextConfig; CLIPTextModelWithProjection for SD3), trained jointly with the
   * denoiser from scratch; absent for pixel-space denoisers.
   */
  text_encoder?: Record<string, unknown>;
  /** The tokenizer: a folder to read, or BPE trained on the run's captions to `vocab_size`. */
  tokenizer?: { path: string | null; vocab_size: number };
  /** The frozen VAE (a diffusers AutoencoderKL folder) whose latents the U-Net is trained on. */
  vae?: { path: string };
  /** Fine-tuning a trained text-to-image pipeline (`diffuse finetune`) instead of training from scratch. */
  finetune?: FinetuneConfig;
  /** A ControlNet for a trained text-to-image pipeline (its U-Net and text encoder frozen). */
  controlnet?: ControlNetTrainConfig;
  data: {
    dataset: "mnist" | "folder" | "emoji";
    path: string | null;
    size: number;
    channels: number;
    /** Only the captioned images with these exact captions (a subset of the emoji set); null: all. */
    captions: string[] | null;
  };
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
    ema_decay: number;
    cond_dropout: number;
    loss_weighting: LossWeightingName;
    snr_gamma: number;
    timestep_sampling: TimestepSamplingName;
    logit_mean: number;
    logit_std: number;
    seed: number;
    threads: number | null;
  };
  output: {
    checkpoint_every: number;
    sample_every: number;
    log_every: number;
    sample_steps: number;
    sample_guidance: number;
  };
}

export const DEFAULTS: Omit<TrainConfig, "model" | "scheduler"> = {
  data: { dataset: "mnist", path: null, size: 32, channels: 1, captions: null },
  training: {
    steps: 6000,
    batch_size: 64,
    lr: 1e-3,
    lr_schedule: "cosine",
    warmup_steps: 200,
    weight_decay: 0,
    adam_beta1: 0.9,
    adam_beta2: 0.999,
    adam_eps: 1e-8,
    grad_clip: 1,
    ema_decay: 0.999,
    cond_dropout: 0.1,
    loss_weighting: "uniform",
    snr_gamma: 5,
    timestep_sampling: "uniform",
    logit_mean: 0,
    logit_std: 1,
    seed: 0,
    threads: null,
  },
  output: { checkpoint_every: 500, sample_every: 1000, log_every: 10, sample_steps: 20, sample_guidance: 2 },
};

const SECTIONS = [
  "model",
  "scheduler",
  "text_encoder",
  "tokenizer",
  "vae",
  "finetune",
  "controlnet",
  "data",
  "training",
  "output",
];

/** The denoiser classes trained on text (train/text-task.ts). */
const TEXT_MODELS: readonly string[] = ["UNet2DConditionModel", "SD3Transformer2DModel"];

/** The text-to-image sections: all three or none, and only with a text-conditioned model. */
function textSections(raw: Json): Pick<TrainConfig, "text_encoder" | "tokenizer" | "vae"> {
  const given = ["text_encoder", "tokenizer", "vae"].filter((k) => raw[k] !== undefined);
  const cls = String((raw["model"] as Json)["_class_name"] ?? "");
  if (given.length === 0) {
    if (TEXT_MODELS.includes(cls))
      throw new ConfigFieldError(
        `a ${cls} trains on text: the config needs "text_encoder" (a CLIPTextConfig), "tokenizer" ({ "vocab_size": N } or { "path": DIR }) and "vae" ({ "path": DIR })`,
      );
    return {};
  }
  if (!TEXT_MODELS.includes(cls))
    throw new ConfigFieldError(
      `config sections ${given.join(", ")} are for text to image; model._class_name must be ${TEXT_MODELS.join(" or ")}, got "${cls}"`,
    );
  for (const k of ["text_encoder", "tokenizer", "vae"])
    if (!isObj(raw[k]))
      throw new ConfigFieldError(
        `config field "${k}" must be an object (text to image needs all of text_encoder, tokenizer, vae)`,
      );
  const tokenizer = section("tokenizer", raw["tokenizer"], { path: null as string | null, vocab_size: 4096 });
  check(
    tokenizer.path === null || typeof tokenizer.path === "string",
    "tokenizer.path",
    "a folder path or null",
    tokenizer.path,
  );
  check(
    isInt(tokenizer.vocab_size, 300),
    "tokenizer.vocab_size",
    "an integer ≥ 300 (256 bytes, their word ends, merges)",
    tokenizer.vocab_size,
  );
  const vae = section("vae", raw["vae"], { path: "" });
  check(
    typeof vae.path === "string" && vae.path !== "",
    "vae.path",
    "the folder of a trained AutoencoderKL (diffuse train configs/emoji-vae.json writes one)",
    vae.path,
  );
  return { text_encoder: raw["text_encoder"] as Json, tokenizer, vae };
}

/** Fills defaults and validates every field; errors name the field, the allowed values and what was given. */
export function resolveConfig(raw: Json): TrainConfig {
  for (const k of Object.keys(raw)) {
    if (!SECTIONS.includes(k)) {
      throw new ConfigFieldError(`unknown config section "${k}"; sections: ${SECTIONS.join(", ")}`);
    }
  }
  if (!isObj(raw["model"]))
    throw new ConfigFieldError(
      `config needs a "model" object (the diffusers config of a ${DENOISER_CLASS_NAMES.join(" or ")})`,
    );
  try {
    resolveDenoiser(raw["model"], 'config field "model"');
  } catch (e) {
    throw new ConfigFieldError((e as Error).message);
  }
  if (!isObj(raw["scheduler"])) {
    throw new ConfigFieldError(
      'config needs a "scheduler" object (a diffusers scheduler config, e.g. DDPMScheduler)',
    );
  }
  const data = section("data", raw["data"], DEFAULTS.data);
  const training = section("training", raw["training"], DEFAULTS.training);
  const output = section("output", raw["output"], DEFAULTS.output);
  const t = training;
  check(
    data.dataset === "mnist" || data.dataset === "folder" || data.dataset === "emoji",
    "data.dataset",
    '"mnist", "folder" or "emoji"',
    data.dataset,
  );
  const text = textSections(raw);
  const finetune = finetuneSection(raw, text);
  const controlnet = controlNetSection(raw, text);
  check(
    data.dataset !== "folder" || typeof data.path === "string",
    "data.path",
    "a folder path for dataset folder",
    data.path,
  );
  check(isInt(data.size, 8), "data.size", "an integer ≥ 8", data.size);
  check(data.channels === 1 || data.channels === 3, "data.channels", "1 or 3", data.channels);
  check(
    data.captions === null ||
      (Array.isArray(data.captions) &&
        data.captions.length > 0 &&
        data.captions.every((c) => typeof c === "string") &&
        data.dataset === "emoji"),
    "data.captions",
    "null, or a non-empty list of emoji captions (dataset emoji)",
    data.captions,
  );
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
  check(isNum(t.ema_decay, 0, 0.999999), "training.ema_decay", "a number in [0, 1)", t.ema_decay);
  check(isNum(t.cond_dropout, 0, 1), "training.cond_dropout", "a probability in [0, 1]", t.cond_dropout);
  check(
    ["uniform", "min-snr", "edm"].includes(t.loss_weighting),
    "training.loss_weighting",
    '"uniform", "min-snr" or "edm"',
    t.loss_weighting,
  );
  check(isNum(t.snr_gamma, 0, 1e6), "training.snr_gamma", "a positive number", t.snr_gamma);
  check(
    ["uniform", "logit-normal"].includes(t.timestep_sampling),
    "training.timestep_sampling",
    '"uniform" or "logit-normal"',
    t.timestep_sampling,
  );
  check(isNum(t.logit_mean, -10, 10), "training.logit_mean", "a number in [-10, 10]", t.logit_mean);
  check(isNum(t.logit_std, 1e-3, 10), "training.logit_std", "a number in [0.001, 10]", t.logit_std);
  check(isInt(t.seed, 0), "training.seed", "an integer ≥ 0", t.seed);
  check(
    t.threads === null || isInt(t.threads, 1),
    "training.threads",
    "an integer ≥ 1 or null (all cores)",
    t.threads,
  );
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
  // the preview grids' steps and guidance obey the one sampling-options schema (pipelines/options.ts)
  for (const [field, key] of [
    ["steps", "sample_steps"],
    ["guidance", "sample_guidance"],
  ] as const) {
    try {
      checkSamplingOption(field, output[key]);
    } catch (e) {
      throw new ConfigFieldError(`config field "output.${key}": ${(e as Error).message}`);
    }
  }
  return {
    model: raw["model"] as DiffusersConfig,
    scheduler: raw["scheduler"] as Json,
    ...text,
    ...(finetune ? { finetune } : {}),
    ...(controlnet ? { controlnet } : {}),
    data,
    training,
    output,
  };
}

/** The learning rate at a step: linear warm-up, then constant, cosine or linear decay to 0. */
export function learningRate(t: TrainConfig["training"], step: number): number {
  if (step < t.warmup_steps) return (t.lr * (step + 1)) / t.warmup_steps;
  const span = Math.max(1, t.steps - t.warmup_steps);
  const p = Math.min(1, (step - t.warmup_steps) / span);
  if (t.lr_schedule === "cosine") return t.lr * 0.5 * (1 + Math.cos(Math.PI * p));
  if (t.lr_schedule === "linear") return t.lr * (1 - p);
  return t.lr;
}

/** EMA decay with warm-up, as diffusers' EMAModel: min(decay, (1 + step) / (10 + step)). */
export function emaDecayAt(decay: number, step: number): number {
  return Math.min(decay, (1 + step) / (10 + step));
}
