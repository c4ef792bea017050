/**
 * The config of an autoencoder run (`diffuse train --config configs/emoji-vae.json`): one JSON file
 * whose `model` is a diffusers AutoencoderKL config.json, with `data`, `training` and `output`
 * sections. Every field has its default and its check in one table below; unknown fields are refused,
 * and each error names the field, what is allowed and what was given. The resolved config is saved
 * beside the checkpoint.
 *
 * Defaults follow latent diffusion's autoencoder recipe where it applies (Adam β = (0.5, 0.9), L1
 * reconstruction, KL weight 1e-6, hinge PatchGAN with the adaptive weight, disc_weight 0.5), scaled
 * down to a small run.
 */
import { createHash } from "node:crypto";
import type { DiffusersConfig } from "../models/config-fields.ts";
import {
  type AutoencoderKLConfig,
  resolveVaeConfig,
  vaeConfig,
  vaeConfigToDiffusers,
  vaeScaleFactor,
} from "../models/vae/config.ts";
import { ConfigFieldError, isObj } from "./config-check.ts";
import type { SettableFields } from "./config-file.ts";
import { checkPatchGan } from "./patch-gan.ts";

type Json = Record<string, unknown>;

/** A field: its default, a check, and what the check wants (for the message). */
interface Field<T> {
  readonly dflt: T;
  readonly ok: (v: unknown) => boolean;
  readonly want: string;
}

/** Every field of a section: the compiler refuses a table that misses one. */
type Table<S> = { readonly [K in keyof S]: Field<S[K]> };
type Check = Omit<Field<unknown>, "dflt">;

const int = (min: number): Check => ({
  ok: (v) => typeof v === "number" && Number.isInteger(v) && v >= min,
  want: `an integer ≥ ${min}`,
});
const range = (lo: number, hi: number, want = `a number in [${lo}, ${hi}]`): Check => ({
  ok: (v) => typeof v === "number" && Number.isFinite(v) && v >= lo && v <= hi,
  want,
});
const oneOf = (...vs: readonly unknown[]): Check => ({
  ok: (v) => vs.includes(v),
  want: vs.map((s) => JSON.stringify(s)).join(" or "),
});
const orNull = (f: Check): Check => ({ ok: (v) => v === null || f.ok(v), want: `${f.want}, or null` });

export interface VaeDataConfig {
  dataset: "emoji" | "mnist" | "folder";
  /** The image folder (dataset "folder"). */
  path: string | null;
  size: number;
  /** Channels of a folder's images (emoji: 3, mnist: 1). */
  channels: 1 | 3;
  /** Images held out for the reconstruction PSNR (mnist: its test split; emoji: its holdout split; folder: its last images). */
  holdout: number;
}

export interface VaeTrainingConfig {
  steps: number;
  batch_size: number;
  lr: number;
  lr_schedule: "constant" | "cosine" | "linear";
  warmup_steps: number;
  weight_decay: number;
  adam_beta1: number;
  adam_beta2: number;
  adam_eps: number;
  grad_clip: number | null;
  /** EMA of the autoencoder's weights (null: none, as latent diffusion). */
  ema_decay: number | null;
  reconstruction: "l1" | "l2";
  /** Weight of the KL term summed over the latent (vae-objective.ts). */
  kl_weight: number;
  /** The first step with the adversarial term (null: no discriminator). */
  disc_start: number | null;
  /** λ ("fixed"), or the factor of the adaptive λ ("adaptive"). */
  disc_weight: number;
  disc_weight_mode: "adaptive" | "fixed";
  /** The discriminator's learning rate (null: training.lr). */
  disc_lr: number | null;
  disc_layers: number;
  disc_channels: number;
  /** Training images encoded at the end to set scaling_factor = 1 / std(latents). */
  scaling_samples: number;
  /**
   * Start from this autoencoder's weights instead of a fresh init: an AutoencoderKL folder, a
   * pipeline folder (its vae/), a VAE run folder (its model/) or a bundled model's name. Its
   * architecture must be the config's `model`.
   */
  init_from: string | null;
  /**
   * What is trained: "all", or "decoder" — the encoder side (encoder, quant_conv) frozen at
   * init_from's weights, so latents, scaling_factor and shift_factor stay as they were and the
   * diffusion models trained on them stay valid (Stable Diffusion's ft-MSE decoder recipe).
   */
  trainable: "all" | "decoder";
  seed: number;
  threads: number | null;
}

export interface VaeOutputConfig {
  checkpoint_every: number;
  /** Held-out PSNR and a reconstruction grid every this many steps (0: only at the end). */
  eval_every: number;
  log_every: number;
  /** Held-out images in each reconstruction grid (originals above, reconstructions below). */
  sample_count: number;
}

export interface VaeTrainConfig {
  /** The diffusers AutoencoderKL config (checked; exported with the measured scaling_factor). */
  model: DiffusersConfig;
  data: VaeDataConfig;
  training: VaeTrainingConfig;
  output: VaeOutputConfig;
}

const DATA: Table<VaeDataConfig> = {
  dataset: { dflt: "emoji", ...oneOf("emoji", "mnist", "folder") },
  path: { dflt: null, ...orNull({ ok: (v) => typeof v === "string" && v !== "", want: "a folder path" }) },
  size: { dflt: 64, ...int(8) },
  channels: { dflt: 3, ...oneOf(1, 3) },
  holdout: { dflt: 64, ...int(1) },
};

const TRAINING: Table<VaeTrainingConfig> = {
  steps: { dflt: 20000, ...int(1) },
  batch_size: { dflt: 32, ...int(1) },
  lr: { dflt: 1e-4, ...range(0, 1) },
  lr_schedule: { dflt: "constant", ...oneOf("constant", "cosine", "linear") },
  warmup_steps: { dflt: 100, ...int(0) },
  weight_decay: { dflt: 0, ...range(0, 1) },
  adam_beta1: { dflt: 0.5, ...range(0, 0.999999, "a number in [0, 1)") },
  adam_beta2: { dflt: 0.9, ...range(0, 0.999999999, "a number in [0, 1)") },
  adam_eps: { dflt: 1e-8, ...range(0, 1, "a small positive number") },
  grad_clip: { dflt: null, ...orNull(range(1e-9, 1e9, "a positive number")) },
  ema_decay: { dflt: null, ...orNull(range(0, 0.999999, "a number in [0, 1)")) },
  reconstruction: { dflt: "l1", ...oneOf("l1", "l2") },
  kl_weight: { dflt: 1e-6, ...range(0, 1e6, "a number ≥ 0") },
  disc_start: { dflt: null, ...orNull(int(0)) },
  disc_weight: { dflt: 0.5, ...range(0, 1e6, "a number ≥ 0") },
  disc_weight_mode: { dflt: "adaptive", ...oneOf("adaptive", "fixed") },
  disc_lr: { dflt: null, ...orNull(range(0, 1)) },
  disc_layers: { dflt: 3, ...int(1) },
  disc_channels: { dflt: 64, ...int(1) },
  scaling_samples: { dflt: 512, ...int(1) },
  init_from: {
    dflt: null,
    ...orNull({
      ok: (v) => typeof v === "string" && v !== "",
      want: "a folder path or a bundled model's name",
    }),
  },
  trainable: { dflt: "all", ...oneOf("all", "decoder") },
  seed: { dflt: 0, ...int(0) },
  threads: { dflt: null, ...orNull(int(1)) },
};

const OUTPUT: Table<VaeOutputConfig> = {
  checkpoint_every: { dflt: 1000, ...int(1) },
  eval_every: { dflt: 500, ...int(0) },
  log_every: { dflt: 10, ...int(1) },
  sample_count: { dflt: 8, ...int(1) },
};

/** A section with its defaults filled in, every field checked. */
function section<S>(name: string, given: unknown, fields: Table<S>): S {
  if (given === undefined) given = {};
  if (!isObj(given)) throw new ConfigFieldError(`config field "${name}" must be an object`);
  for (const k of Object.keys(given)) {
    if (!Object.hasOwn(fields, k)) {
      throw new ConfigFieldError(
        `unknown config field "${name}.${k}"; known fields: ${Object.keys(fields).join(", ")}`,
      );
    }
  }
  const out: Json = {};
  for (const [k, f] of Object.entries(fields) as [string, Field<unknown>][]) {
    const v = given[k] === undefined ? f.dflt : given[k];
    if (!f.ok(v)) {
      throw new ConfigFieldError(`config field "${name}.${k}" must be ${f.want}, got ${JSON.stringify(v)}`);
    }
    out[k] = v;
  }
  return out as S;
}

/** What `--set` may name in an autoencoder run's config: every field of every section. */
export function vaeSettableFields(): SettableFields {
  return {
    model: Object.keys(vaeConfigToDiffusers(vaeConfig())),
    data: Object.keys(DATA),
    training: Object.keys(TRAINING),
    output: Object.keys(OUTPUT),
  };
}

/** Whether a raw run config trains an autoencoder (its model is an AutoencoderKL). */
export function isVaeRunConfig(raw: Json): boolean {
  return isObj(raw["model"]) && raw["model"]["_class_name"] === "AutoencoderKL";
}

/** Fills defaults and checks every field and how they fit together (sizes, discriminator depth). */
export function resolveVaeTrainConfig(raw: Json): VaeTrainConfig {
  if (!isObj(raw)) throw new ConfigFieldError("a VAE run config must be a JSON object");
  for (const k of Object.keys(raw)) {
    if (!["model", "data", "training", "output"].includes(k)) {
      throw new ConfigFieldError(
        `unknown config section "${k}" for an AutoencoderKL run; sections: model, data, training, output`,
      );
    }
  }
  if (!isObj(raw["model"])) {
    throw new ConfigFieldError('config needs a "model" object (a diffusers AutoencoderKL config.json)');
  }
  let model: AutoencoderKLConfig;
  try {
    model = resolveVaeConfig(raw["model"]);
  } catch (e) {
    throw new ConfigFieldError(`config field "model": ${(e as Error).message}`);
  }
  const cfg: VaeTrainConfig = {
    model: raw["model"],
    data: section("data", raw["data"], DATA),
    training: section("training", raw["training"], TRAINING),
    output: section("output", raw["output"], OUTPUT),
  };
  const { data, training: t } = cfg;
  if (data.dataset === "folder" && data.path === null) {
    throw new ConfigFieldError(
      'config field "data.path" must be a folder path for dataset "folder", got null',
    );
  }
  const f = vaeScaleFactor(model);
  if (data.size % f !== 0) {
    throw new ConfigFieldError(
      `config field "data.size" must be a multiple of ${f} (this AutoencoderKL halves the image ${Math.log2(f)} times), got ${data.size}`,
    );
  }
  const channels = data.dataset === "emoji" ? 3 : data.dataset === "mnist" ? 1 : data.channels;
  if (channels !== model.inChannels || channels !== model.outChannels) {
    throw new ConfigFieldError(
      `config field "model": in_channels and out_channels must be ${channels} for ${data.dataset} images, got ${model.inChannels} and ${model.outChannels}`,
    );
  }
  if (t.trainable === "decoder" && t.init_from === null) {
    throw new ConfigFieldError(
      'config field "training.trainable" is "decoder", which keeps the encoder of training.init_from: set training.init_from to the autoencoder to start from',
    );
  }
  if (t.disc_start !== null) {
    try {
      checkPatchGan(data.size, { layers: t.disc_layers, channels: t.disc_channels });
    } catch (e) {
      throw new ConfigFieldError(`config field "training.disc_layers": ${(e as Error).message}`);
    }
  }
  return cfg;
}

/** A hash of what must not change across a resume (everything but steps, threads and the output section). */
export function vaeConfigHash(c: VaeTrainConfig): string {
  const { steps: _s, threads: _t, ...training } = c.training;
  return createHash("sha256")
    .update(JSON.stringify({ model: c.model, data: c.data, training }))
    .digest("hex")
    .slice(0, 16);
}
