/**
 * A tiny random StableDiffusionControlNetPipeline for tests: the tiny Stable Diffusion pipeline
 * (tiny-sd.ts) with a ControlNet made from its U-Net (conditioning embedding [8, 16]: the VAE's factor
 * 2) whose zero convolutions are made random, so that it steers; and a random rank-2 LoRA file on the
 * U-Net's attention. Plumbing only: the weights are random.
 */
import { join } from "node:path";
import { ControlNetModel } from "../../src/models/controlnet/model.ts";
import { type LoraLayer, loraLayerNames, saveLoraWeights } from "../../src/models/lora/index.ts";
import type { UNet2DConditionModel } from "../../src/models/unet-cond/model.ts";
import { disposePipeline, loadPipeline, saveTextToImagePipeline } from "../../src/pipelines/pipeline-dir.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import { Rng } from "../../src/tensor/rng.ts";

/** The Canny settings recorded in the pipeline's diffuse.json (those of a ControlNet training run). */
export const TINY_CONTROL_CANNY = { sigma: 1, low: 0.05, high: 0.1 };

/** Writes `<dir of sd>/tiny-sd-controlnet` from the tiny pipeline at `sd`; returns its folder. */
export async function makeTinyControlNetSd(sd: string, seed = 5): Promise<string> {
  const dir = join(sd, "..", "tiny-sd-controlnet");
  const pipe = await loadPipeline(sd);
  try {
    const cn = ControlNetModel.fromUnet(pipe.denoiser as UNet2DConditionModel, {
      conditioningEmbeddingOutChannels: [8, 16],
    });
    const rng = new Rng(seed);
    for (const [k, v] of cn.params)
      if (/^controlnet_(down_blocks|mid_block)|^controlnet_cond_embedding\.conv_out/.test(k))
        cn.params.set(k, new HostTensor(rng.normal(v.size, 0, 0.2), v.shape));
    await saveTextToImagePipeline(dir, {
      unet: pipe.denoiser,
      textEncoder: pipe.text!.textEncoder,
      tokenizer: pipe.text!.tokenizer,
      vae: pipe.vae!,
      schedulerConfig: pipe.schedulerConfig,
      info: { ...pipe.info, control: { kind: "canny", canny: TINY_CONTROL_CANNY } },
      controlnet: cn,
    });
  } finally {
    disposePipeline(pipe);
  }
  return dir;
}

/** Writes a random rank-2 LoRA (diffusers' file) on the U-Net's to_q/to_k/to_v of the tiny pipeline. */
export async function makeTinyLora(sd: string, path: string, seed = 11): Promise<void> {
  const pipe = await loadPipeline(sd);
  try {
    const rng = new Rng(seed);
    const layers = new Map<string, LoraLayer>();
    for (const l of loraLayerNames(pipe.denoiser.params).filter((n) => /attn\d\.to_[qkv]$/.test(n))) {
      const w = pipe.denoiser.params.get(`${l}.weight`)!;
      const [out, inn] = w.shape as [number, number];
      layers.set(l, {
        a: new HostTensor(rng.normal(2 * inn, 0, 0.5), [2, inn]),
        b: new HostTensor(rng.normal(out * 2, 0, 0.5), [out, 2]),
        alpha: 4,
      });
    }
    pipe.denoiser.lora.add("style", layers);
    saveLoraWeights(path, pipe, "style");
  } finally {
    disposePipeline(pipe);
  }
}
