/**
 * A tiny random text-to-image pipeline for tests: a StableDiffusionPipeline folder (Rombach et al. 2022)
 * as diffusers lays it out, written by saveTextToImagePipeline, small enough that loading it and a
 * 4-step generation take a second or two on a CPU.
 *
 *   tokenizer/     CLIP byte-level BPE trained on a few captions (600 entries)
 *   text_encoder/  a 2-layer CLIPTextModel of width 32
 *   unet/          a UNet2DConditionModel, blocks [32, 32], 4×8×8 latents, cross_attention_dim 32
 *   vae/           an AutoencoderKL, blocks [32, 32]: factor 2, so 16×16 RGB images
 *   scheduler/     a DDPMScheduler (ε prediction, scaled-linear betas as SD)
 *   diffuse.json   numClasses null, a prompt template and examples, the recommended sampling
 *
 * The weights are random: tests check plumbing (shapes, streaming, errors), never image quality.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { modelFromConfig } from "../../src/models/load.ts";
import { trainClipBpe } from "../../src/models/text/bpe-train.ts";
import { CLIPTextModel } from "../../src/models/text/clip-text-model.ts";
import { AutoencoderKL } from "../../src/models/vae/model.ts";
import { type PipelineInfo, saveTextToImagePipeline } from "../../src/pipelines/pipeline-dir.ts";

/** Captions the tokenizer is trained on (and the examples diffuse.json offers). */
export const TINY_SD_CAPTIONS = [
  "a red circle on a white background",
  "a blue square on a white background",
  "a green triangle on a black background",
  "a yellow star on a black background",
  "two red circles side by side",
  "a small blue square in the corner",
];

/** The context length of the tiny tokenizer and text encoder (CLIP's is 77): short, so over-long prompts are cheap to write. */
export const TINY_SD_MAX_LENGTH = 16;

export const TINY_SD_TEXT_ENCODER = {
  vocab_size: 600,
  hidden_size: 32,
  intermediate_size: 64,
  num_hidden_layers: 2,
  num_attention_heads: 2,
  max_position_embeddings: TINY_SD_MAX_LENGTH,
  hidden_act: "quick_gelu",
};

export const TINY_SD_UNET = {
  _class_name: "UNet2DConditionModel",
  sample_size: 8,
  in_channels: 4,
  out_channels: 4,
  block_out_channels: [32, 32],
  layers_per_block: 1,
  down_block_types: ["CrossAttnDownBlock2D", "DownBlock2D"],
  up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D"],
  norm_num_groups: 8,
  cross_attention_dim: 32,
  attention_head_dim: 2,
};

export const TINY_SD_VAE = {
  block_out_channels: [32, 32],
  down_block_types: ["DownEncoderBlock2D", "DownEncoderBlock2D"],
  up_block_types: ["UpDecoderBlock2D", "UpDecoderBlock2D"],
  norm_num_groups: 8,
  latent_channels: 4,
  sample_size: 16,
};

export const TINY_SD_SCHEDULER = {
  _class_name: "DDPMScheduler",
  num_train_timesteps: 1000,
  beta_schedule: "scaled_linear",
  beta_start: 0.00085,
  beta_end: 0.012,
  prediction_type: "epsilon",
};

export interface TinySdOptions {
  /** The folder to write (default: a fresh temporary folder; the caller removes it). */
  dir?: string;
  seed?: number;
  /** Laid over the default diffuse.json. */
  info?: Partial<PipelineInfo>;
}

/** Writes the tiny pipeline and returns its folder. */
export async function makeTinySd(opts: TinySdOptions = {}): Promise<string> {
  const dir = opts.dir ?? join(mkdtempSync(join(tmpdir(), "diffuse-tiny-sd-")), "tiny-sd");
  const seed = opts.seed ?? 1;
  const tokenizer = trainClipBpe(TINY_SD_CAPTIONS, {
    vocabSize: TINY_SD_TEXT_ENCODER.vocab_size,
    minFrequency: 1,
    modelMaxLength: TINY_SD_MAX_LENGTH,
  });
  const textEncoder = CLIPTextModel.fromConfig(
    {
      ...TINY_SD_TEXT_ENCODER,
      vocab_size: tokenizer.vocabSize,
      bos_token_id: tokenizer.bosTokenId,
      eos_token_id: tokenizer.eosTokenId,
      pad_token_id: tokenizer.padTokenId,
    },
    { seed },
  );
  const unet = modelFromConfig(TINY_SD_UNET, { seed: seed + 1 });
  const vae = AutoencoderKL.fromConfig(TINY_SD_VAE, { seed: seed + 2 });
  try {
    await saveTextToImagePipeline(dir, {
      unet,
      textEncoder,
      tokenizer,
      vae,
      schedulerConfig: { ...TINY_SD_SCHEDULER },
      info: {
        numClasses: null,
        dataset: "shapes",
        imageRange: [-1, 1],
        promptTemplate: "a {color} {shape} on a {background} background",
        promptExamples: TINY_SD_CAPTIONS.slice(0, 3),
        sampling: { scheduler: "ddim", steps: 4, guidance: 3 },
        ...opts.info,
      },
    });
  } finally {
    unet.dispose();
    textEncoder.dispose();
    vae.dispose();
  }
  return dir;
}
