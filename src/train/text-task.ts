/**
 * The text-to-image task (latent diffusion, Rombach et al. 2022): a UNet2DConditionModel trained on
 * the latents of a frozen, already trained VAE, cross-attending to a CLIP text encoder's hidden
 * states — the text encoder trained jointly with the U-Net, from scratch, by the same denoising loss
 * (one ONNX graph: token ids → text encoder → U-Net → loss). Imagen and LDM train with frozen,
 * pretrained encoders; a project that makes its own models has none, and joint training needs no
 * separate contrastive stage (see docs/text-to-image.md for the measurement behind the choice).
 *
 * Host side per step: the batch's latents are drawn from the VAE's posterior N(mean, std²) (the
 * moments of every training image computed once and cached in the run folder), scaled as diffusers
 * does ((z − shift_factor)·scaling_factor); captions become token ids, each replaced by the empty
 * prompt with probability `training.cond_dropout` (classifier-free guidance's unconditional model).
 *
 * The tokenizer is read from `tokenizer.path`, or trained (byte-level BPE) on the training captions
 * at the run's start and saved in the run folder; the export is a StableDiffusionPipeline folder.
 */
import { createHash } from "node:crypto";
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import type { ImageDataset } from "../data/dataset.ts";
import { type EmojiDataset, emojiPrompts, loadEmoji } from "../data/emoji.ts";
import { DataLoader } from "../data/loader.ts";
import { readSafetensors, writeSafetensors } from "../io/safetensors.ts";
import { type AnyDenoiserModel, modelFromParams } from "../models/load.ts";
import { resolveDenoiser } from "../models/registry.ts";
import { trainClipBpe } from "../models/text/bpe-train.ts";
import { clipTextForward, clipTextParamSpecs } from "../models/text/clip-text.ts";
import { resolveClipTextConfig } from "../models/text/clip-text-config.ts";
import { CLIPTextModel } from "../models/text/clip-text-model.ts";
import { CLIPTokenizer } from "../models/text/clip-tokenizer.ts";
import { vaeScaleFactor } from "../models/vae/config.ts";
import { AutoencoderKL } from "../models/vae/model.ts";
import { generate } from "../pipelines/generate.ts";
import { defaultSchedulerName, parametersText, type SamplingOptions } from "../pipelines/options.ts";
import { saveTextToImagePipeline } from "../pipelines/pipeline-dir.ts";
import { schedulerFor } from "../pipelines/scheduler-names.ts";
import {
  latentDecoder,
  promptConditions,
  type TextEncoding,
  tokenizePrompts,
} from "../pipelines/text-to-image.ts";
import { HostTensor } from "../tensor/host.ts";
import type { ParamScope, Params } from "../tensor/params.ts";
import { Rng } from "../tensor/rng.ts";
import type { TrainComponent } from "./checkpoint.ts";
import { componentParams, denoiserComponent } from "./checkpoint.ts";
import type { TrainConfig } from "./config.ts";
import { batchSpecs, diffusionLoss, drawBatch, type Objective, objectiveOf } from "./objective.ts";
import type { PreviewImages, TrainTask } from "./task.ts";
import { pickImages } from "./vae-data.ts";

/** Prompts of the preview grids: the first training captions and held-out compositions. */
const PREVIEW_PROMPTS = 8;

/** The text encoder as a trained component (transformers' folder layout: config.json + model.safetensors). */
export function textEncoderComponent(config: Record<string, unknown>, prefix: string): TrainComponent {
  return {
    name: "text_encoder",
    prefix,
    specs: clipTextParamSpecs(resolveClipTextConfig(config).config),
    write: (dir, params) => CLIPTextModel.fromParams(config, params).savePretrained(dir),
    read: async (dir) => (await CLIPTextModel.fromPretrained(dir)).params,
  };
}

/** The VAE posterior's moments of the training images: N(mean, std²) per latent value. */
export interface LatentMoments {
  mean: Float32Array;
  std: Float32Array;
  /** [N, C, h, w] */
  shape: number[];
}

/** The VAE posterior's moments of every image, computed once per (run, VAE, images) and cached. */
export async function latentMoments(
  vae: AutoencoderKL,
  data: ImageDataset & { readonly captions: readonly string[] },
  cachePath: string,
): Promise<LatentMoments> {
  // the cache is valid for these weights and these images only
  const hash = createHash("sha256");
  for (const [k, v] of vae.params)
    hash.update(k).update(new Uint8Array(v.data.buffer, v.data.byteOffset, v.data.byteLength));
  hash.update(data.captions.join("\n")).update(String(data.height));
  const key = hash.digest("hex");
  if (existsSync(cachePath)) {
    const st = readSafetensors(cachePath);
    const mean = st.tensors.get("mean");
    const std = st.tensors.get("std");
    if (mean && std && st.metadata["key"] === key)
      return { mean: mean.data as Float32Array, std: std.data as Float32Array, shape: [...mean.shape] };
  }
  const per = data.channels * data.height * data.width;
  const chunk = 64;
  let mean: Float32Array | null = null;
  let std: Float32Array | null = null;
  let shape: number[] = [];
  for (let lo = 0; lo < data.count; lo += chunk) {
    const hi = Math.min(data.count, lo + chunk);
    const x = new Float32Array((hi - lo) * per);
    for (let i = 0; i < x.length; i++) x[i] = data.images[lo * per + i]! * 2 - 1;
    const d = await vae.encode(new HostTensor(x, [hi - lo, data.channels, data.height, data.width]));
    if (!mean || !std) {
      shape = [data.count, ...d.mean.shape.slice(1)];
      const n = shape.reduce((a, b) => a * b, 1);
      mean = new Float32Array(n);
      std = new Float32Array(n);
    }
    const lat = d.mean.size / (hi - lo);
    mean.set(d.mean.data as Float32Array, lo * lat);
    std.set(d.std.data as Float32Array, lo * lat);
  }
  writeSafetensors(
    cachePath,
    new Map([
      ["mean", new HostTensor(mean!, shape)],
      ["std", new HostTensor(std!, shape)],
    ]),
    { metadata: { key } },
  );
  return { mean: mean!, std: std!, shape };
}

/** The images whose captions are listed (all when null); an unknown caption is an error naming it. */
function emojiSubset(d: EmojiDataset, captions: readonly string[] | null): EmojiDataset {
  if (!captions) return d;
  const at = new Map(d.captions.map((c, i) => [c, i]));
  const idx = captions.map((c) => {
    const i = at.get(c);
    if (i === undefined)
      throw new Error(
        `data.captions: "${c}" is not the caption of a training image (captions read "<name>[, <tone> skin tone], <vendor> style", e.g. "thumbs up sign, google style")`,
      );
    return i;
  });
  const pick = <T>(a: ArrayLike<T>): T[] => idx.map((i) => a[i]!);
  return {
    ...d,
    count: idx.length,
    images: pickImages(d, idx).images,
    labels: Int32Array.from(pick(d.labels)),
    identities: Int32Array.from(pick(d.identities)),
    vendors: Int32Array.from(pick(d.vendors)),
    captions: pick(d.captions),
    categories: pick(d.categories),
    files: pick(d.files),
    records: pick(d.records),
  };
}

/** What a text-to-image training batch is drawn from (the images' latents and token ids). */
export interface TextBatchContext {
  readonly obj: Objective;
  readonly inChannels: number;
  readonly latentSize: number;
  readonly moments: LatentMoments;
  /** VAE scaling: (z − shift)·scale. */
  readonly shift: number;
  readonly scale: number;
  /** Token ids of each image's caption, and of the empty prompt (condition dropout). */
  readonly ids: readonly (readonly number[])[];
  readonly emptyIds: readonly number[];
  readonly condDropout: number;
  /** A loss weight per image (DreamBooth's prior-preservation weight on the class images); default 1. */
  readonly imageWeights?: Float32Array;
}

/**
 * The feeds of one batch of the given images: latents z ~ N(mean, std²) scaled as diffusers does,
 * the noise and timesteps of the objective, and token ids (each caption replaced by the empty prompt
 * with probability condDropout), all from `rng` (a per-step stream: resumes draw the same).
 */
export function textBatch(
  ctx: TextBatchContext,
  indices: ArrayLike<number>,
  rng: Rng,
): Record<string, HostTensor> {
  const n = indices.length;
  const latPer = ctx.moments.mean.length / ctx.moments.shape[0]!;
  const eps = rng.fold("latent").normal(n * latPer);
  const x0 = new Float32Array(n * latPer);
  for (let i = 0; i < n; i++) {
    const off = indices[i]! * latPer;
    for (let j = 0; j < latPer; j++) {
      const z = ctx.moments.mean[off + j]! + ctx.moments.std[off + j]! * eps[i * latPer + j]!;
      x0[i * latPer + j] = (z - ctx.shift) * ctx.scale;
    }
  }
  const feeds = drawBatch(
    ctx.obj,
    new HostTensor(x0, [n, ctx.inChannels, ctx.latentSize, ctx.latentSize]),
    null,
    rng,
  );
  if (ctx.imageWeights) {
    const w = feeds["w"]!.data as Float32Array;
    for (let i = 0; i < n; i++) w[i] = w[i]! * ctx.imageWeights[indices[i]!]!;
  }
  const seqLen = ctx.emptyIds.length;
  const drop = rng.fold("dropout");
  const tok = new BigInt64Array(n * seqLen);
  for (let i = 0; i < n; i++) {
    const row = drop.nextUniform() < ctx.condDropout ? ctx.emptyIds : ctx.ids[indices[i]!]!;
    for (let j = 0; j < seqLen; j++) tok[i * seqLen + j] = BigInt(row[j]!);
  }
  feeds["cond.input_ids"] = new HostTensor(tok, [n, seqLen]);
  return feeds;
}

/** A preview grid of a text-to-image model: each prompt twice (two seeds' rows), with its parameters. */
export async function textPreview(
  cfg: TrainConfig,
  parts: {
    unet: AnyDenoiserModel;
    text: TextEncoding;
    vae: AutoencoderKL;
    latentSize: number;
    imageSize: number;
  },
  prompts: readonly string[],
  step: number,
  extra: Record<string, string | number> = {},
): Promise<PreviewImages> {
  const t = cfg.training;
  const opts: SamplingOptions = {
    scheduler: defaultSchedulerName(cfg.scheduler),
    karras: false,
    steps: cfg.output.sample_steps,
    guidance: cfg.output.sample_guidance,
    guidanceRescale: 0,
    eta: 0,
    seed: t.seed,
  };
  const all = [...prompts, ...prompts];
  const conditions = await promptConditions(parts.text, all);
  const images = await generate(parts.unet, schedulerFor({ name: opts.scheduler }, cfg.scheduler), {
    conditions,
    steps: opts.steps,
    guidance: opts.guidance,
    seed: opts.seed,
    size: parts.latentSize,
    decode: latentDecoder(parts.vae),
  });
  return {
    images,
    nrow: prompts.length,
    parameters: parametersText(opts, {
      step,
      extra: { prompts: prompts.join(" | "), size: parts.imageSize, ...extra },
    }),
  };
}

export async function textTask(cfg: TrainConfig, runDir: string): Promise<TrainTask> {
  const model = resolveDenoiser(cfg.model);
  if (model.conditioning.kind !== "text")
    throw new Error(`${model.className} is not text-conditioned: text to image needs a UNet2DConditionModel`);
  if (cfg.data.dataset !== "emoji")
    throw new Error(
      `text to image trains on captioned images: data.dataset must be "emoji", got "${cfg.data.dataset}"`,
    );
  const teCheck = resolveClipTextConfig(cfg.text_encoder!).config;
  if (teCheck.hiddenSize !== model.conditioning.dim)
    throw new Error(
      `text_encoder.hidden_size (${teCheck.hiddenSize}) must equal model.cross_attention_dim (${model.conditioning.dim})`,
    );
  if (!existsSync(join(cfg.vae!.path, "config.json")))
    throw new Error(
      `vae.path: ${cfg.vae!.path} holds no trained VAE (config.json + weights); train one first (diffuse train --config configs/emoji-vae.json --out runs/emoji-vae writes runs/emoji-vae/model) or point vae.path at an AutoencoderKL folder`,
    );
  const obj = objectiveOf(cfg, model);
  const t = cfg.training;
  const seed = new Rng(t.seed);
  const data = emojiSubset(loadEmoji({ split: "train", size: cfg.data.size }), cfg.data.captions);

  // the tokenizer: given, or BPE trained on the training captions (deterministic) and kept with the run
  const tokDir = join(runDir, "tokenizer");
  let tokenizer: CLIPTokenizer;
  if (cfg.tokenizer!.path) tokenizer = CLIPTokenizer.fromPretrained(cfg.tokenizer!.path);
  else if (existsSync(join(tokDir, "vocab.json"))) tokenizer = CLIPTokenizer.fromPretrained(tokDir);
  else {
    tokenizer = trainClipBpe([...data.captions], { vocabSize: cfg.tokenizer!.vocab_size });
    tokenizer.savePretrained(tokDir);
  }
  if (tokenizer.vocabSize > teCheck.vocabSize)
    throw new Error(
      `the tokenizer has ${tokenizer.vocabSize} tokens but text_encoder.vocab_size is ${teCheck.vocabSize}: raise vocab_size`,
    );
  // the encoder's special ids are the tokenizer's (its end-of-text token pools the output)
  const teJson: Record<string, unknown> = {
    ...cfg.text_encoder!,
    bos_token_id: tokenizer.bosTokenId,
    eos_token_id: tokenizer.eosTokenId,
    pad_token_id: tokenizer.padTokenId,
  };
  const teConfig = resolveClipTextConfig(teJson).config;
  const seqLen = tokenizer.modelMaxLength;
  const ids = tokenizePrompts(tokenizer, data.captions, "caption");
  const emptyIds = tokenizePrompts(tokenizer, [""], "caption")[0]!;

  // the frozen VAE and the latents of the training images
  const vae = await AutoencoderKL.fromPretrained(cfg.vae!.path);
  const factor = vaeScaleFactor(vae.config);
  const latentSize = cfg.data.size / factor;
  if (model.geometry.inChannels !== vae.config.latentChannels)
    throw new Error(
      `model.in_channels (${model.geometry.inChannels}) must equal the VAE's latent_channels (${vae.config.latentChannels})`,
    );
  mkdirSync(runDir, { recursive: true });
  const moments = await latentMoments(vae, data, join(runDir, "latents.safetensors"));
  const latPer = moments.mean.length / data.count;
  const batchCtx: TextBatchContext = {
    obj,
    inChannels: model.geometry.inChannels,
    latentSize,
    moments,
    shift: vae.shiftFactor ?? 0,
    scale: vae.scalingFactor,
    ids,
    emptyIds,
    condDropout: t.cond_dropout,
  };

  const unet = denoiserComponent(cfg, "unet.");
  const textEncoder = textEncoderComponent(teJson, "text_encoder.");
  const loader = new DataLoader(data, { batchSize: t.batch_size, rng: seed.fold("data") });
  const specs = batchSpecs(model, t.batch_size, latentSize);
  delete specs["cond.encoder_hidden_states"];
  specs["cond.input_ids"] = { shape: [t.batch_size, seqLen], dtype: "int64" };

  const previewPrompts = cfg.data.captions
    ? data.captions.slice(0, PREVIEW_PROMPTS)
    : [
        ...emojiPrompts("train").slice(0, PREVIEW_PROMPTS / 2),
        ...emojiPrompts("holdout").slice(0, PREVIEW_PROMPTS / 2),
      ];

  return {
    components: [unet, textEncoder],
    batchSpecs: specs,
    batchSize: t.batch_size,
    description: `emoji: ${data.count} captioned images → ${latPer} latent values each`,
    loss: diffusionLoss(model, {
      denoiserScope: "unet",
      condition: (scope: ParamScope, b) => ({
        encoder_hidden_states: clipTextForward(scope.sub("text_encoder"), teConfig, b["cond.input_ids"]!)
          .lastHiddenState, // [B, L, D]
      }),
    }),
    batch(k) {
      const b = loader.batchAt(Math.floor(k / loader.batchesPerEpoch), k % loader.batchesPerEpoch);
      return textBatch(batchCtx, b.indices, seed.fold("step").fold(k));
    },
    async preview(params, step) {
      const session = t.threads ? { session: { threads: t.threads } } : {};
      const u = modelFromParams(cfg.model, componentParams(unet, params as Params), session);
      const te = CLIPTextModel.fromParams(teJson, componentParams(textEncoder, params as Params));
      try {
        const parts = {
          unet: u,
          text: { tokenizer, textEncoder: te },
          vae,
          latentSize,
          imageSize: cfg.data.size,
        };
        return await textPreview(cfg, parts, previewPrompts, step);
      } finally {
        u.dispose();
        te.dispose();
      }
    },
    async exportPipeline(params, step, dir) {
      const u = modelFromParams(cfg.model, componentParams(unet, params as Params));
      const te = CLIPTextModel.fromParams(teJson, componentParams(textEncoder, params as Params));
      try {
        await saveTextToImagePipeline(dir, {
          unet: u,
          textEncoder: te,
          tokenizer,
          vae,
          schedulerConfig: cfg.scheduler,
          info: {
            numClasses: null,
            dataset: cfg.data.dataset,
            trainedSteps: step,
            imageRange: [-1, 1],
            sampling: { guidance: cfg.output.sample_guidance },
          },
        });
      } finally {
        u.dispose();
        te.dispose();
      }
    },
  };
}
