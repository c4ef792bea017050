/**
 * The sections of a run that adapts a base pipeline instead of training from scratch: `finetune`
 * (LoRA or full fine-tuning, DreamBooth with prior preservation) and `controlnet` (a ControlNet for the
 * base's frozen U-Net), their defaults and their checks. The rest of the run config is config.ts's.
 */
import type { TrainConfig } from "./config.ts";
import { ConfigFieldError, check, isInt, isNum, type Json, section } from "./config-check.ts";

/**
 * `finetune`: the base pipeline's weights start the run; LoRA (Hu et al. 2021) trains low-rank
 * adapters on the `targets` layers with the base frozen, "full" trains every weight. DreamBooth (Ruiz
 * et al. 2023): every training image is captioned with `instance_prompt`; with `class_prompt`, the base
 * model first draws `num_class_images` images of the class, trained alongside with weight
 * `prior_loss_weight` (prior preservation: the class keeps its look).
 */
export interface FinetuneConfig {
  base: string;
  method: "lora" | "full";
  rank: number;
  /** LoRA's alpha (scale alpha / rank); null: the rank (scale 1). */
  alpha: number | null;
  /** PEFT's target_modules for the U-Net (null: to_q, to_k, to_v, to_out.0). */
  targets: string[] | string | null;
  /** Train the text encoder too (LoRA on q_proj, k_proj, v_proj, out_proj; or all of it with "full"). */
  text_encoder: boolean;
  instance_prompt: string | null;
  class_prompt: string | null;
  prior_loss_weight: number;
  num_class_images: number;
}

export const FINETUNE_DEFAULTS: Omit<FinetuneConfig, "base"> = {
  method: "lora",
  rank: 4,
  alpha: null,
  targets: null,
  text_encoder: false,
  instance_prompt: null,
  class_prompt: null,
  prior_loss_weight: 1,
  num_class_images: 64,
};

/**
 * `controlnet`: a ControlNet (Zhang, Rao & Agrawala 2023) trained for the `base` pipeline, whose U-Net
 * and text encoder stay frozen: a copy of the U-Net's encoder (`ControlNetModel.fromUnet`) steered by
 * Canny edge maps of the training images (computed once at the start; `canny_*` are the detector's
 * settings, data/edges.ts). `conditioning_embedding_out_channels` needs log2(VAE factor) + 1 entries
 * (the control image is the pixel image); null: 16, 32, 64, … of that length. `layout_prob`: the
 * share of training images shown at a new size and place (data/layout.ts: scaled by a factor uniform
 * in [`layout_min_scale`, 1], image and edges alike), so the ControlNet learns to follow the edges
 * wherever they are. `init_from`: a ControlNet (its folder, or a pipeline folder with one) to go on
 * training instead of a fresh copy of the U-Net's encoder.
 */
export interface ControlNetTrainConfig {
  base: string;
  conditioning_embedding_out_channels: number[] | null;
  canny_sigma: number;
  canny_low: number;
  canny_high: number;
  layout_prob: number;
  layout_min_scale: number;
  init_from: string | null;
}

export const CONTROLNET_DEFAULTS: Omit<ControlNetTrainConfig, "base"> = {
  conditioning_embedding_out_channels: null,
  canny_sigma: 1,
  canny_low: 0.05,
  canny_high: 0.1,
  layout_prob: 0,
  layout_min_scale: 0.5,
  init_from: null,
};

/** The finetune section, checked (a text-to-image run: text_encoder, tokenizer and vae come from the base). */
export function finetuneSection(
  raw: Json,
  text: Pick<TrainConfig, "text_encoder">,
): FinetuneConfig | undefined {
  if (raw["finetune"] === undefined) return undefined;
  const f = section("finetune", raw["finetune"], { base: "", ...FINETUNE_DEFAULTS });
  check(typeof f.base === "string" && f.base !== "", "finetune.base", "the base pipeline's folder", f.base);
  if (!text.text_encoder)
    throw new ConfigFieldError(
      "finetune is for text-to-image pipelines: the config needs the base's text_encoder, tokenizer and vae sections (diffuse finetune fills them in)",
    );
  check(f.method === "lora" || f.method === "full", "finetune.method", '"lora" or "full"', f.method);
  check(isInt(f.rank, 1) && f.rank <= 1024, "finetune.rank", "an integer from 1 to 1024", f.rank);
  check(
    f.alpha === null || isNum(f.alpha, 1e-6, 1e6),
    "finetune.alpha",
    "a positive number or null (= rank)",
    f.alpha,
  );
  check(
    f.targets === null ||
      (typeof f.targets === "string" && f.targets !== "") ||
      (Array.isArray(f.targets) &&
        f.targets.length > 0 &&
        f.targets.every((x) => typeof x === "string" && x !== "")),
    "finetune.targets",
    'null, a list of layer names (e.g. ["to_q", "to_v"]) or one regular expression',
    f.targets,
  );
  check(typeof f.text_encoder === "boolean", "finetune.text_encoder", "true or false", f.text_encoder);
  for (const k of ["instance_prompt", "class_prompt"] as const)
    check(
      f[k] === null || (typeof f[k] === "string" && f[k].trim() !== ""),
      `finetune.${k}`,
      "null or a prompt",
      f[k],
    );
  if (f.class_prompt !== null && f.instance_prompt === null)
    throw new ConfigFieldError(
      "finetune.class_prompt (prior preservation) goes with finetune.instance_prompt (DreamBooth): give both, or neither",
    );
  check(
    isNum(f.prior_loss_weight, 0, 1e3),
    "finetune.prior_loss_weight",
    "a number ≥ 0",
    f.prior_loss_weight,
  );
  check(
    isInt(f.num_class_images, 1) && f.num_class_images <= 10000,
    "finetune.num_class_images",
    "an integer from 1 to 10000",
    f.num_class_images,
  );
  return f;
}

/** The controlnet section, checked (the base's text_encoder, tokenizer, vae and model fill the rest). */
export function controlNetSection(
  raw: Json,
  text: Pick<TrainConfig, "text_encoder">,
): ControlNetTrainConfig | undefined {
  if (raw["controlnet"] === undefined) return undefined;
  const c = section("controlnet", raw["controlnet"], { base: "", ...CONTROLNET_DEFAULTS });
  check(typeof c.base === "string" && c.base !== "", "controlnet.base", "the base pipeline's folder", c.base);
  if (!text.text_encoder)
    throw new ConfigFieldError(
      "a ControlNet run needs the base's model, scheduler, text_encoder, tokenizer and vae sections (diffuse train fills them in from controlnet.base)",
    );
  if (raw["finetune"] !== undefined)
    throw new ConfigFieldError('a run is a "finetune" or a "controlnet" run, not both: drop one section');
  const ch = c.conditioning_embedding_out_channels;
  check(
    ch === null ||
      (Array.isArray(ch) && ch.length >= 1 && ch.length <= 8 && ch.every((v) => isInt(v, 1) && v <= 4096)),
    "controlnet.conditioning_embedding_out_channels",
    "null or a list of 1 to 8 channel counts (log2 of the VAE's factor + 1 entries, e.g. [16, 32, 64] for a 4× VAE)",
    ch,
  );
  check(isNum(c.canny_sigma, 0, 10), "controlnet.canny_sigma", "a blur σ from 0 to 10 pixels", c.canny_sigma);
  check(isNum(c.canny_low, 1e-6, 10), "controlnet.canny_low", "a positive threshold", c.canny_low);
  check(
    isNum(c.canny_high, c.canny_low, 10),
    "controlnet.canny_high",
    `a threshold ≥ canny_low (${c.canny_low})`,
    c.canny_high,
  );
  check(isNum(c.layout_prob, 0, 1), "controlnet.layout_prob", "a share from 0 to 1", c.layout_prob);
  check(
    isNum(c.layout_min_scale, 0.05, 1),
    "controlnet.layout_min_scale",
    "the smallest scale of a re-laid-out image, from 0.05 to 1",
    c.layout_min_scale,
  );
  check(
    c.init_from === null || (typeof c.init_from === "string" && c.init_from !== ""),
    "controlnet.init_from",
    "null, or the folder of a ControlNet to go on training (a controlnet/ folder or a pipeline folder with one)",
    c.init_from,
  );
  return c;
}
