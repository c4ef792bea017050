/**
 * Training a ControlNet (Zhang, Rao & Agrawala 2023) for a trained text-to-image pipeline: the
 * `controlnet` section of a `diffuse train` config. The ControlNet starts as a copy of the base U-Net's
 * encoder (`ControlNetModel.fromUnet`) whose zero convolutions make step 0 exactly the base model;
 * the U-Net and the text encoder are frozen (constants of the one training graph: token ids → text
 * encoder → ControlNet → U-Net → loss), so only the ControlNet gets gradients, moments and EMA.
 *
 * The control images are Canny edge maps (data/edges.ts) of the training images, computed once at the
 * start and kept as bytes; a batch is the text-to-image task's (text-task.ts: VAE latents drawn from
 * cached moments, captions dropped to the empty prompt with probability `training.cond_dropout` — the
 * paper drops 50% so the ControlNet learns to read structure without the prompt) plus its edge maps.
 * With `controlnet.layout_prob` > 0, a batch's images are re-laid out first (data/layout.ts: shrunk and
 * moved, each with that probability, from the step's own random stream), then encoded by the VAE and
 * edge-detected as they are: the layout then comes from the control image, not from the caption.
 *
 * Previews: a row of control edge maps, the images made with them, and the base's images without
 * them, with the row's edge F1 in the parameters text. The export is a StableDiffusionControlNetPipeline
 * folder (the base's components + controlnet/), its diffuse.json recording the detector's settings.
 */
import { join } from "node:path";
import { type CaptionedDataset, loadCaptionFolder } from "../data/caption-folder.ts";
import { type CannyOptions, canny } from "../data/edges.ts";
import { type EmojiDataset, loadEmoji } from "../data/emoji.ts";
import { relayout } from "../data/layout.ts";
import { DataLoader } from "../data/loader.ts";
import { edgeF1 } from "../eval/edges.ts";
import { controlledBound, releaseControlled } from "../models/controlnet/controlled.ts";
import { controlNetParamSpecs } from "../models/controlnet/controlnet.ts";
import { ControlNetModel } from "../models/controlnet/model.ts";
import { clipTextForward } from "../models/text/clip-text.ts";
import { UNet2DConditionModel } from "../models/unet-cond/model.ts";
import { vaeScaleFactor } from "../models/vae/config.ts";
import { parametersText, type SamplingOptions, samplingDefaults } from "../pipelines/options.ts";
import {
  disposePipeline,
  type LoadedPipeline,
  loadPipeline,
  resolveModelDir,
  saveTextToImagePipeline,
} from "../pipelines/pipeline-dir.ts";
import { imageSize, pipelineGenerate } from "../pipelines/run.ts";
import { schedulerFor } from "../pipelines/scheduler-names.ts";
import { HostTensor } from "../tensor/host.ts";
import type { ParamScope, Params } from "../tensor/params.ts";
import { Rng } from "../tensor/rng.ts";
import { componentParams, type TrainComponent } from "./checkpoint.ts";
import type { TrainConfig } from "./config.ts";
import type { ControlNetTrainConfig } from "./config-adapt.ts";
import { batchSpecs, diffusionLoss, objectiveOf } from "./objective.ts";
import type { PreviewImages, TrainTask } from "./task.ts";
import { textBatch, textBatchContext } from "./text-task.ts";

/** Images in a preview row. */
const PREVIEW = 8;

/** The detector settings of a controlnet section. */
export const cannyOf = (c: ControlNetTrainConfig): CannyOptions => ({
  sigma: c.canny_sigma,
  low: c.canny_low,
  high: c.canny_high,
});

/** Canny edge maps of every image as bytes (one channel, 1 on edges), N × S × S. */
export function edgeBytes(
  data: { count: number; height: number; width: number; images: Float32Array },
  opts: CannyOptions,
): Uint8Array {
  const plane = data.height * data.width;
  const per = 3 * plane;
  const out = new Uint8Array(data.count * plane);
  const chunk = 256;
  for (let lo = 0; lo < data.count; lo += chunk) {
    const hi = Math.min(data.count, lo + chunk);
    const e = canny(
      new HostTensor(data.images.subarray(lo * per, hi * per), [hi - lo, 3, data.height, data.width]),
      opts,
    );
    for (let i = 0; i < e.size; i++) out[lo * plane + i] = e.data[i]!;
  }
  return out;
}

/** The edge maps of some images as control images [n, channels, S, S] in {0, 1}. */
function controlImages(
  edges: Uint8Array,
  idx: ArrayLike<number>,
  side: number,
  channels: number,
): HostTensor<"float32"> {
  const plane = side * side;
  const out = new Float32Array(idx.length * channels * plane);
  for (let i = 0; i < idx.length; i++) {
    const src = edges.subarray(idx[i]! * plane, (idx[i]! + 1) * plane);
    for (let k = 0; k < channels; k++) {
      const at = (i * channels + k) * plane;
      for (let p = 0; p < plane; p++) out[at + p] = src[p]!;
    }
  }
  return new HostTensor(out, [idx.length, channels, side, side]);
}

/** The training images: the emoji training split, or a captioned folder. */
function trainingImages(cfg: TrainConfig, size: number): EmojiDataset | CaptionedDataset {
  if (cfg.data.dataset === "folder") {
    if (!cfg.data.path)
      throw new Error('data.path: a ControlNet run on "folder" needs the folder of captioned images');
    return loadCaptionFolder(cfg.data.path, { size });
  }
  if (cfg.data.dataset !== "emoji")
    throw new Error(
      `a ControlNet trains on captioned images: data.dataset must be "emoji" or "folder", got "${cfg.data.dataset}"`,
    );
  if (cfg.data.captions)
    throw new Error(
      "data.captions: a ControlNet run trains on the whole emoji training split; drop the field",
    );
  return loadEmoji({ split: "train", size });
}

/**
 * The ControlNet a run starts from: `init_from`'s (a controlnet/ folder or a pipeline folder with
 * one), which must have the parameters of the fresh copy `fresh` of the base's encoder; else `fresh`.
 */
async function startingControlNet(from: string | null, fresh: ControlNetModel): Promise<ControlNetModel> {
  if (from === null) return fresh;
  let loaded: ControlNetModel;
  try {
    loaded = await ControlNetModel.fromPretrained(resolveModelDir(from));
  } catch (e) {
    throw new Error(`controlnet.init_from "${from}": ${(e as Error).message}`);
  }
  const want = new Map(controlNetParamSpecs(fresh.config).map((p) => [p.name, p.shape.join("×")]));
  const have = new Map(controlNetParamSpecs(loaded.config).map((p) => [p.name, p.shape.join("×")]));
  for (const [name, shape] of want) {
    if (have.get(name) !== shape) {
      loaded.dispose();
      throw new Error(
        `controlnet.init_from "${from}" is not a ControlNet for this base: ${name} is ${have.get(name) ?? "missing"} there, ${shape} in a copy of the base's encoder (check controlnet.base and conditioning_embedding_out_channels)`,
      );
    }
  }
  fresh.dispose();
  return loaded;
}

export async function controlNetTask(cfg: TrainConfig, runDir: string): Promise<TrainTask> {
  const base = await loadPipeline(cfg.controlnet!.base);
  try {
    if (!base.text || !base.vae || !(base.denoiser instanceof UNet2DConditionModel))
      throw new Error(
        `controlnet.base: ${base.dir} is a ${base.pipelineClass}; a ControlNet steers a text-to-image pipeline's UNet2DConditionModel`,
      );
    return await buildTask(cfg, base, runDir);
  } finally {
    disposePipeline(base); // the sessions; the models compile again when used
  }
}

async function buildTask(cfg: TrainConfig, base: LoadedPipeline, runDir: string): Promise<TrainTask> {
  const c = cfg.controlnet!;
  const t = cfg.training;
  const unet = base.denoiser as UNet2DConditionModel;
  const { tokenizer, textEncoder } = base.text!;
  const vae = base.vae!;
  const size = imageSize(base);
  if (cfg.data.size !== size)
    throw new Error(`data.size (${cfg.data.size}) must be the base pipeline's image size (${size})`);
  const factor = vaeScaleFactor(vae.config);
  const levels = Math.log2(factor);
  const channels =
    c.conditioning_embedding_out_channels ?? Array.from({ length: levels + 1 }, (_, i) => 16 * 2 ** i);
  if (channels.length !== levels + 1)
    throw new Error(
      `controlnet.conditioning_embedding_out_channels has ${channels.length} entries; the control image is ${factor}× the latents (the VAE's factor), which takes log2(${factor}) + 1 = ${levels + 1}, e.g. ${JSON.stringify(Array.from({ length: levels + 1 }, (_, i) => 16 * 2 ** i))}`,
    );
  const start = await startingControlNet(
    c.init_from,
    ControlNetModel.fromUnet(unet, { conditioningEmbeddingOutChannels: channels, seed: t.seed }),
  );
  const ccfg = start.config;
  const latentSize = size / factor;
  const model = controlledBound(unet.typedConfig, ccfg, { latentSize });
  const obj = objectiveOf(cfg, model);
  const seed = new Rng(t.seed);
  const detector = cannyOf(c);

  const data = trainingImages(cfg, size);
  const edges = edgeBytes(data, detector);
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
  const emptyIds = batchCtx.emptyIds;
  const specs = batchSpecs(model, t.batch_size, latentSize);
  delete specs["cond.encoder_hidden_states"];
  delete specs["cond.conditioning_scale"]; // scale 1 while training
  specs["cond.input_ids"] = { shape: [t.batch_size, emptyIds.length], dtype: "int64" };

  const component: TrainComponent = {
    name: "controlnet",
    prefix: "controlnet.",
    specs: controlNetParamSpecs(ccfg),
    write: (dir, params) => ControlNetModel.fromParams(ccfg, params).savePretrained(dir),
    read: async (dir) => (await ControlNetModel.fromPretrained(dir)).params,
  };
  const initial: Params = new Map([...start.params].map(([k, v]) => [`controlnet.${k}`, v]));
  const frozen: Params = new Map(unet.params);
  for (const [k, v] of textEncoder.params) frozen.set(`text_encoder.${k}`, v);
  const teConfig = textEncoder.typedConfig;
  const loader = new DataLoader(data, { batchSize: t.batch_size, rng: seed.fold("data") });

  // previews: PREVIEW training images spread over the set, their edges as control
  const previewIdx = Array.from({ length: Math.min(PREVIEW, data.count) }, (_, i) =>
    Math.floor((i * data.count) / Math.min(PREVIEW, data.count)),
  );
  const previewPrompts = previewIdx.map((i) => data.captions[i]!);
  const previewControl = controlImages(edges, previewIdx, size, ccfg.conditioningChannels);
  const previewTarget = controlImages(edges, previewIdx, size, 1);
  const sampling: SamplingOptions = {
    ...samplingDefaults(base),
    steps: cfg.output.sample_steps,
    guidance: cfg.output.sample_guidance,
    seed: t.seed,
  };
  let plainPreview: HostTensor<"float32"> | null = null;
  const pipelineWith = (cn: ControlNetModel): LoadedPipeline => ({
    ...base,
    pipelineClass: "StableDiffusionControlNetPipeline",
    controlnet: cn,
  });
  const controlInfo = (step: number) => ({
    kind: "canny",
    canny: detector,
    base: base.dir,
    trainedSteps: step,
    dataset: cfg.data.dataset === "folder" ? cfg.data.path : "emoji (training split)",
  });

  return {
    components: [component],
    batchSpecs: specs,
    batchSize: t.batch_size,
    description: `${data.count} captioned images and their Canny edges → a ControlNet (${component.specs.length} tensors) for the frozen ${base.dir}`,
    frozen,
    initial,
    loss: diffusionLoss(model, {
      condition: (scope: ParamScope, b) => ({
        encoder_hidden_states: clipTextForward(scope.sub("text_encoder"), teConfig, b["cond.input_ids"]!)
          .lastHiddenState, // [B, L, D]
        controlnet_cond: b["cond.controlnet_cond"]!, // [B, C, S, S]
      }),
    }),
    async batch(k) {
      const b = loader.batchAt(Math.floor(k / loader.batchesPerEpoch), k % loader.batchesPerEpoch);
      const rng = seed.fold("step").fold(k);
      if (c.layout_prob === 0) {
        const feeds = textBatch(batchCtx, b.indices, rng);
        feeds["cond.controlnet_cond"] = controlImages(edges, b.indices, size, ccfg.conditioningChannels);
        return feeds;
      }
      // re-laid-out images: their latents and edges are the batch's own
      const n = b.indices.length;
      const images = relayout(b.images.data, n, 3, size, rng.fold("layout"), {
        prob: c.layout_prob,
        minScale: c.layout_min_scale,
      });
      const d = await vae.encode(
        new HostTensor(
          images.map((v) => v * 2 - 1),
          [n, 3, size, size],
        ),
      );
      const own = Array.from({ length: n }, (_, i) => i);
      const feeds = textBatch(
        {
          ...batchCtx,
          moments: {
            mean: d.mean.data as Float32Array,
            std: d.std.data as Float32Array,
            shape: [...d.mean.shape],
          },
          ids: Array.from(b.indices, (i) => batchCtx.ids[i]!),
        },
        own,
        rng,
      );
      const batchEdges = edgeBytes({ count: n, height: size, width: size, images }, detector);
      feeds["cond.controlnet_cond"] = controlImages(batchEdges, own, size, ccfg.conditioningChannels);
      return feeds;
    },
    async preview(params, step): Promise<PreviewImages> {
      const cn = ControlNetModel.fromParams(ccfg, componentParams(component, params as Params));
      const pipe = pipelineWith(cn);
      const scheduler = schedulerFor({ name: sampling.scheduler }, base.schedulerConfig);
      const req = {
        prompts: previewPrompts,
        steps: sampling.steps,
        guidance: sampling.guidance,
        seed: sampling.seed,
      };
      try {
        const steered = await pipelineGenerate(pipe, scheduler, {
          ...req,
          control: { image: previewControl, scale: 1 },
        });
        plainPreview ??= await pipelineGenerate(base, scheduler, req);
        const f1 = (x: HostTensor<"float32">) => edgeF1(canny(x, detector), previewTarget).f1.toFixed(3);
        const n = previewIdx.length;
        const rows = new Float32Array(3 * n * 3 * size * size);
        const shown = controlImages(edges, previewIdx, size, 3);
        rows.set(shown.data);
        rows.set(steered.data, n * 3 * size * size);
        rows.set(plainPreview.data, 2 * n * 3 * size * size);
        return {
          images: new HostTensor(rows, [3 * n, 3, size, size]),
          nrow: n,
          parameters: parametersText(sampling, {
            step,
            extra: {
              rows: "control edges | with control | without",
              prompts: previewPrompts.join(" | "),
              "edge F1 with control": f1(steered),
              "edge F1 without": f1(plainPreview),
              base: base.dir,
            },
          }),
        };
      } finally {
        cn.dispose();
        releaseControlled(unet);
      }
    },
    async exportPipeline(params, step, dir) {
      const cn = ControlNetModel.fromParams(ccfg, componentParams(component, params as Params));
      try {
        await saveTextToImagePipeline(dir, {
          unet,
          textEncoder,
          tokenizer,
          vae,
          schedulerConfig: base.schedulerConfig,
          info: { ...base.info, control: controlInfo(step) },
          controlnet: cn,
        });
      } finally {
        cn.dispose();
      }
    },
  };
}

/**
 * A ControlNet run's config with the base pipeline's sections filled in (model, scheduler,
 * text_encoder, tokenizer, vae; sections given are kept), so the run folder's config.json describes
 * the run alone, and the image size (data.size) when not given.
 */
export async function withBaseSections(raw: Record<string, unknown>): Promise<Record<string, unknown>> {
  const section = raw["controlnet"] as Record<string, unknown> | undefined;
  const name = section?.["base"];
  if (typeof name !== "string" || name === "") return raw;
  const base = await loadPipeline(name);
  try {
    if (!base.text || !base.vae)
      throw new Error(
        `controlnet.base: ${base.dir} is a ${base.pipelineClass}; a ControlNet steers a text-to-image pipeline (with a text encoder and a VAE)`,
      );
    const data = (raw["data"] as Record<string, unknown> | undefined) ?? {};
    return {
      model: base.denoiser.config,
      scheduler: base.schedulerConfig,
      text_encoder: base.text.textEncoder.config,
      tokenizer: { path: join(base.dir, "tokenizer") },
      vae: { path: join(base.dir, "vae") },
      ...raw,
      controlnet: { ...section, base: base.dir },
      data: { size: imageSize(base), channels: 3, ...data },
    };
  } finally {
    disposePipeline(base);
  }
}
