/**
 * The text-to-image task (latent diffusion, Rombach et al. 2022): a denoiser trained on the latents of
 * a frozen, already trained VAE, conditioned on a CLIP text encoder's states — a UNet2DConditionModel
 * cross-attending to them, or an SD3Transformer2DModel (MM-DiT, Esser et al. 2024) attending jointly
 * to them and taking the pooled text_embeds (text-condition.ts: what each takes) — the text encoder
 * trained jointly with the denoiser, from scratch, by the same loss (one ONNX graph: token ids → text
 * encoder → denoiser → loss). Imagen and LDM train with frozen, pretrained encoders; a project that
 * makes its own models has none, and joint training needs no separate contrastive stage (see
 * docs/text-to-image.md for the measurement behind the choice). The MM-DiT trains with rectified flow
 * (a FlowMatchEulerDiscreteScheduler config: logit-normal t, SD3's `shift`; objective.ts).
 *
 * Host side per step: the batch's latents are drawn from the VAE's posterior N(mean, std²) (the
 * moments of every training image computed once and cached in the run folder), scaled as diffusers
 * does ((z − shift_factor)·scaling_factor); captions become token ids, each replaced by the empty
 * prompt with probability `training.cond_dropout` (classifier-free guidance's unconditional model).
 *
 * The tokenizer is read from `tokenizer.path`, or trained (byte-level BPE) on the training captions
 * at the run's start and saved in the run folder; its context is the encoder's max_position_embeddings
 * (at most CLIP's 77). The export is a StableDiffusionPipeline folder, or for the MM-DiT a
 * StableDiffusion3Pipeline folder with one text encoder (pipelines/sd3-pipeline.ts).
 */
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import type { ImageDataset } from "../data/dataset.ts";
import { type EmojiDataset, emojiPrompts, loadEmoji } from "../data/emoji.ts";
import { DataLoader } from "../data/loader.ts";
import { type AnyDenoiserModel, modelFromParams } from "../models/load.ts";
import { resolveDenoiser } from "../models/registry.ts";
import { trainClipBpe } from "../models/text/bpe-train.ts";
import { resolveClipTextConfig } from "../models/text/clip-text-config.ts";
import { CLIPTextModelWithProjection } from "../models/text/clip-text-model.ts";
import { CLIPTokenizer } from "../models/text/clip-tokenizer.ts";
import { vaeScaleFactor } from "../models/vae/config.ts";
import { AutoencoderKL } from "../models/vae/model.ts";
import { generate } from "../pipelines/generate.ts";
import { defaultSchedulerName, parametersText, type SamplingOptions } from "../pipelines/options.ts";
import { saveTextToImagePipeline } from "../pipelines/pipeline-dir.ts";
import { schedulerFor } from "../pipelines/scheduler-names.ts";
import { saveSd3Pipeline } from "../pipelines/sd3-pipeline.ts";
import {
  latentDecoder,
  promptConditions,
  type TextEncoding,
  tokenizePrompts,
} from "../pipelines/text-to-image.ts";
import { HostTensor } from "../tensor/host.ts";
import type { Params } from "../tensor/params.ts";
import { Rng } from "../tensor/rng.ts";
import { componentParams, denoiserComponent } from "./checkpoint.ts";
import type { TrainConfig } from "./config.ts";
import { type LatentMoments, latentMoments } from "./latent-moments.ts";
import { batchSpecs, diffusionLoss, drawBatch, type Objective, objectiveOf } from "./objective.ts";
import type { PreviewImages, TrainTask } from "./task.ts";
import {
  MMDIT_T5_TOKENS,
  textCondition,
  textEncoderComponent,
  textLayoutOf,
  trainedTextEncoding,
} from "./text-condition.ts";
import { pickImages } from "./vae-data.ts";

export { type LatentMoments, latentMoments } from "./latent-moments.ts";
export { textEncoderComponent } from "./text-condition.ts";

/** Prompts of the preview grids: the first training captions and held-out compositions. */
const PREVIEW_PROMPTS = 8;

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
 * The batch context of captioned images: their latents' posterior moments through the frozen VAE
 * (cached in the run folder: latents.safetensors) and their captions' token ids.
 */
export async function textBatchContext(opts: {
  obj: Objective;
  inChannels: number;
  latentSize: number;
  vae: AutoencoderKL;
  tokenizer: CLIPTokenizer;
  data: ImageDataset & { readonly captions: readonly string[] };
  runDir: string;
  condDropout: number;
  imageWeights?: Float32Array;
}): Promise<TextBatchContext> {
  mkdirSync(opts.runDir, { recursive: true });
  return {
    obj: opts.obj,
    inChannels: opts.inChannels,
    latentSize: opts.latentSize,
    moments: await latentMoments(opts.vae, opts.data, join(opts.runDir, "latents.safetensors")),
    shift: opts.vae.shiftFactor ?? 0,
    scale: opts.vae.scalingFactor,
    ids: tokenizePrompts(opts.tokenizer, opts.data.captions, "caption"),
    emptyIds: tokenizePrompts(opts.tokenizer, [""], "caption")[0]!,
    condDropout: opts.condDropout,
    ...(opts.imageWeights ? { imageWeights: opts.imageWeights } : {}),
  };
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
  const layout = textLayoutOf(model, cfg.text_encoder!);
  if (cfg.data.dataset !== "emoji")
    throw new Error(
      `text to image trains on captioned images: data.dataset must be "emoji", got "${cfg.data.dataset}"`,
    );
  const teCheck = resolveClipTextConfig(cfg.text_encoder!).config;
  if (!existsSync(join(cfg.vae!.path, "config.json")))
    throw new Error(
      `vae.path: ${cfg.vae!.path} holds no trained VAE (config.json + weights); train one first (diffuse train --config configs/emoji-vae.json --out runs/emoji-vae writes runs/emoji-vae/model) or point vae.path at an AutoencoderKL folder`,
    );
  const obj = objectiveOf(cfg, model);
  const t = cfg.training;
  const seed = new Rng(t.seed);
  const data = emojiSubset(loadEmoji({ split: "train", size: cfg.data.size }), cfg.data.captions);

  // the tokenizer: given, or BPE trained on the training captions (deterministic) and kept with the run;
  // its context is at most the encoder's positions (a shorter one costs the MM-DiT's attention less)
  const context = Math.min(77, teCheck.maxPositionEmbeddings);
  const tokDir = join(runDir, "tokenizer");
  let tokenizer: CLIPTokenizer;
  if (cfg.tokenizer!.path) tokenizer = CLIPTokenizer.fromPretrained(cfg.tokenizer!.path);
  else if (existsSync(join(tokDir, "vocab.json"))) tokenizer = CLIPTokenizer.fromPretrained(tokDir);
  else {
    tokenizer = trainClipBpe([...data.captions], {
      vocabSize: cfg.tokenizer!.vocab_size,
      modelMaxLength: context,
    });
    tokenizer.savePretrained(tokDir);
  }
  if (tokenizer.vocabSize > teCheck.vocabSize)
    throw new Error(
      `the tokenizer has ${tokenizer.vocabSize} tokens but text_encoder.vocab_size is ${teCheck.vocabSize}: raise vocab_size`,
    );
  if (tokenizer.modelMaxLength > teCheck.maxPositionEmbeddings)
    throw new Error(
      `the tokenizer pads prompts to ${tokenizer.modelMaxLength} tokens but text_encoder.max_position_embeddings is ${teCheck.maxPositionEmbeddings}: raise max_position_embeddings to ${tokenizer.modelMaxLength}`,
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

  // the frozen VAE and the latents of the training images
  const vae = await AutoencoderKL.fromPretrained(cfg.vae!.path);
  const factor = vaeScaleFactor(vae.config);
  const latentSize = cfg.data.size / factor;
  if (model.geometry.inChannels !== vae.config.latentChannels)
    throw new Error(
      `model.in_channels (${model.geometry.inChannels}) must equal the VAE's latent_channels (${vae.config.latentChannels})`,
    );
  if (latentSize % model.geometry.multipleOf !== 0)
    throw new Error(
      `the latents are ${latentSize}×${latentSize} (data.size ${cfg.data.size} / the VAE's factor ${factor}), not a multiple of ${model.geometry.multipleOf} as ${model.className} needs: change data.size or the model's patch_size`,
    );
  const batchCtx = await textBatchContext({
    obj,
    inChannels: model.geometry.inChannels,
    latentSize,
    vae,
    tokenizer,
    data,
    runDir,
    condDropout: t.cond_dropout,
  });
  const latPer = batchCtx.moments.mean.length / data.count;

  // the denoiser's buffers (SD3's position table) are constants of the step, never trained (trainer.ts)
  const denoiser = denoiserComponent(cfg, `${model.component}.`);
  const textEncoder = textEncoderComponent(teJson, "text_encoder.");
  const components = [denoiser, textEncoder];
  const loader = new DataLoader(data, { batchSize: t.batch_size, rng: seed.fold("data") });
  const specs = batchSpecs(model, t.batch_size, latentSize, { textLength: seqLen });
  delete specs["cond.encoder_hidden_states"];
  delete specs["cond.pooled_projections"];
  specs["cond.input_ids"] = { shape: [t.batch_size, seqLen], dtype: "int64" };

  const previewPrompts = cfg.data.captions
    ? data.captions.slice(0, PREVIEW_PROMPTS)
    : [
        ...emojiPrompts("train").slice(0, PREVIEW_PROMPTS / 2),
        ...emojiPrompts("holdout").slice(0, PREVIEW_PROMPTS / 2),
      ];
  const textOf = (params: Params) =>
    trainedTextEncoding(layout, tokenizer, teJson, componentParams(textEncoder, params));

  return {
    components,
    batchSpecs: specs,
    batchSize: t.batch_size,
    description: `emoji: ${data.count} captioned images → ${latPer} latent values each`,
    loss: diffusionLoss(model, {
      denoiserScope: model.component,
      condition: textCondition(layout, teConfig),
    }),
    batch(k) {
      const b = loader.batchAt(Math.floor(k / loader.batchesPerEpoch), k % loader.batchesPerEpoch);
      return textBatch(batchCtx, b.indices, seed.fold("step").fold(k));
    },
    async preview(params, step) {
      const session = t.threads ? { session: { threads: t.threads } } : {};
      const u = modelFromParams(cfg.model, componentParams(denoiser, params as Params), session);
      const text = textOf(params as Params);
      try {
        const parts = { unet: u, text, vae, latentSize, imageSize: cfg.data.size };
        return await textPreview(cfg, parts, previewPrompts, step);
      } finally {
        u.dispose();
        text.textEncoder.dispose();
      }
    },
    async exportPipeline(params, step, dir) {
      const u = modelFromParams(cfg.model, componentParams(denoiser, params as Params));
      const te = textOf(params as Params).textEncoder;
      const info = {
        numClasses: null,
        dataset: cfg.data.dataset,
        trainedSteps: step,
        imageRange: [-1, 1],
        sampling: { guidance: cfg.output.sample_guidance },
      };
      try {
        if (layout.kind === "sd3") {
          if (!(te instanceof CLIPTextModelWithProjection))
            throw new Error("unreachable: SD3's encoder has a projection");
          await saveSd3Pipeline(dir, {
            transformer: u,
            textEncoder: te,
            tokenizer,
            vae,
            schedulerConfig: cfg.scheduler,
            info: { ...info, maxSequenceLength: MMDIT_T5_TOKENS },
          });
        } else
          await saveTextToImagePipeline(dir, {
            unet: u,
            textEncoder: te,
            tokenizer,
            vae,
            schedulerConfig: cfg.scheduler,
            info,
          });
      } finally {
        u.dispose();
        te.dispose();
      }
    },
  };
}
