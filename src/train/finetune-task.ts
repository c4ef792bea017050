/**
 * Fine-tuning a trained text-to-image pipeline (`diffuse finetune`): the base's U-Net (and, with
 * `finetune.text_encoder`, its CLIP text encoder) adapted on a folder of captioned images.
 *
 * - LoRA (Hu et al. 2021): rank-r adapters on the targeted layers (the U-Net's attention projections by
 *   default), A from PyTorch's default init and B = 0, so step 0 is the base model; the base weights
 *   are constants of the training graph, so only A and B get gradients, moments and EMA. The export
 *   is diffusers' `pytorch_lora_weights.safetensors` (load it with `diffuse sample --lora` or
 *   diffusers' `load_lora_weights`).
 * - Full fine-tuning: every weight of the trained components, starting from the base's; the export is
 *   a whole pipeline folder.
 * - DreamBooth (Ruiz et al. 2023): one instance prompt with a rare token for every image; with a class
 *   prompt, the base model first draws the class images (cached in the run folder), and each batch is
 *   half instance, half class images, the class half weighted by `prior_loss_weight` (prior
 *   preservation: the model keeps drawing the class as it did).
 *
 * Batches, latents and previews are the text-to-image task's (text-task.ts).
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { type CaptionedDataset, loadCaptionFolder } from "../data/caption-folder.ts";
import { DataLoader } from "../data/loader.ts";
import { replaceDirAtomic, writeFileAtomic } from "../io/atomic.ts";
import { makeGrid } from "../io/grid.ts";
import { encodePng } from "../io/png.ts";
import { modelFromParams } from "../models/load.ts";
import { type LoraLayer, loraLayerNames, writeLoraFile } from "../models/lora/index.ts";
import { resolveDenoiser } from "../models/registry.ts";
import { clipTextForward } from "../models/text/clip-text.ts";
import { CLIPTextModel } from "../models/text/clip-text-model.ts";
import { vaeScaleFactor } from "../models/vae/config.ts";
import { loraTargets, TEXT_LORA_TARGETS, UNET_LORA_TARGETS } from "../nn/lora.ts";
import { samplingDefaults } from "../pipelines/options.ts";
import {
  disposePipeline,
  type LoadedPipeline,
  loadPipeline,
  saveTextToImagePipeline,
} from "../pipelines/pipeline-dir.ts";
import { imageSize, pipelineGenerate } from "../pipelines/run.ts";
import { schedulerFor } from "../pipelines/scheduler-names.ts";
import type { LoraPlan, LoraSite, ParamScope, Params } from "../tensor/params.ts";
import { Rng } from "../tensor/rng.ts";
import { componentParams, denoiserComponent, type TrainComponent } from "./checkpoint.ts";
import type { TrainConfig } from "./config.ts";
import type { FinetuneConfig } from "./config-adapt.ts";
import { adapterLayers, LORA_ADAPTER, LORA_WEIGHTS_NAME, loraComponent } from "./lora-component.ts";
import { batchSpecs, diffusionLoss, objectiveOf } from "./objective.ts";
import type { TrainTask } from "./task.ts";
import { textBatch, textBatchContext, textEncoderComponent, textPreview } from "./text-task.ts";

export { LORA_WEIGHTS_NAME } from "./lora-component.ts";

/** Prefixes every name (a component's weights as the train step names them). */
const prefixed = (prefix: string, params: Params): Params =>
  new Map([...params].map(([k, v]) => [prefix + k, v]));

/**
 * The class images of prior preservation: drawn by the base model once, with its recommended
 * sampler, and kept in the run folder (a resumed run reads them back). A folder with another prompt
 * or count is drawn again.
 */
async function classImages(
  base: LoadedPipeline,
  f: FinetuneConfig,
  runDir: string,
  seed: number,
  size: number,
): Promise<CaptionedDataset> {
  const dir = join(runDir, "class_images");
  const meta = join(dir, "metadata.jsonl");
  const wanted = f.num_class_images;
  const current = () => {
    if (!existsSync(meta)) return false;
    const rows = readFileSync(meta, "utf8").trim().split("\n");
    return (
      rows.length === wanted && rows.every((r) => (JSON.parse(r) as { text: string }).text === f.class_prompt)
    );
  };
  if (!current()) {
    const opts = samplingDefaults(base);
    const scheduler = schedulerFor({ name: opts.scheduler, karras: opts.karras }, base.schedulerConfig);
    const files: { name: string; png: Uint8Array }[] = [];
    for (let lo = 0, k = 0; lo < wanted; lo += 16, k++) {
      const n = Math.min(16, wanted - lo);
      const imgs = await pipelineGenerate(base, scheduler, {
        prompts: Array.from({ length: n }, () => f.class_prompt!),
        steps: opts.steps,
        guidance: opts.guidance,
        seed: seed + k,
      });
      const [, c, h, w] = imgs.shape as [number, number, number, number];
      for (let i = 0; i < n; i++) {
        const one = { data: imgs.data.subarray(i * c * h * w, (i + 1) * c * h * w), shape: [c, h, w] };
        const png = encodePng(makeGrid(one, { padding: 0 }));
        files.push({ name: `class-${String(lo + i).padStart(5, "0")}.png`, png });
      }
    }
    replaceDirAtomic(dir, (tmp) => {
      for (const f2 of files) writeFileAtomic(join(tmp, f2.name), f2.png);
      writeFileAtomic(
        join(tmp, "metadata.jsonl"),
        `${files.map((x) => JSON.stringify({ file_name: x.name, text: f.class_prompt })).join("\n")}\n`,
      );
    });
  }
  return loadCaptionFolder(dir, { size });
}

/** Instance images (and class images) as one captioned set, with the class images' loss weight. */
function joined(a: CaptionedDataset, b: CaptionedDataset | null, priorWeight: number) {
  const weights = new Float32Array(a.count + (b?.count ?? 0)).fill(1);
  if (!b) return { data: a, weights };
  weights.fill(priorWeight, a.count);
  const images = new Float32Array(a.images.length + b.images.length);
  images.set(a.images);
  images.set(b.images, a.images.length);
  const data: CaptionedDataset = {
    ...a,
    count: a.count + b.count,
    images,
    labels: null,
    captions: [...a.captions, ...b.captions],
    files: [...a.files, ...b.files],
  };
  return { data, weights };
}

export async function finetuneTask(cfg: TrainConfig, runDir: string): Promise<TrainTask> {
  const f = cfg.finetune!;
  const t = cfg.training;
  const base = await loadPipeline(f.base);
  try {
    if (!base.text || !base.vae)
      throw new Error(
        `finetune.base: ${base.dir} is a ${base.pipelineClass}; diffuse finetune adapts text-to-image pipelines (with a text encoder and a VAE)`,
      );
    return await buildTask(cfg, f, base, runDir, t);
  } finally {
    disposePipeline(base);
  }
}

async function buildTask(
  cfg: TrainConfig,
  f: FinetuneConfig,
  base: LoadedPipeline,
  runDir: string,
  t: TrainConfig["training"],
): Promise<TrainTask> {
  const model = resolveDenoiser(cfg.model);
  const obj = objectiveOf(cfg, model);
  const { tokenizer, textEncoder } = base.text!;
  const vae = base.vae!;
  const size = imageSize(base);
  if (cfg.data.size !== size)
    throw new Error(`data.size (${cfg.data.size}) must be the base pipeline's image size (${size})`);
  if (cfg.data.dataset !== "folder" || !cfg.data.path)
    throw new Error('finetune trains on a folder of captioned images: data.dataset "folder" and data.path');
  const seed = new Rng(t.seed);
  const instances = loadCaptionFolder(cfg.data.path, { size, prompt: f.instance_prompt });
  const prior = f.class_prompt ? await classImages(base, f, runDir, t.seed, size) : null;
  if (prior && t.batch_size < 2)
    throw new Error(
      "training.batch_size must be ≥ 2 with prior preservation (half instance, half class images)",
    );
  const { data, weights } = joined(instances, prior, f.prior_loss_weight);
  const latentSize = size / vaeScaleFactor(vae.config);
  const batchCtx = await textBatchContext({
    obj,
    inChannels: model.geometry.inChannels,
    latentSize,
    vae,
    tokenizer,
    data,
    runDir,
    condDropout: t.cond_dropout,
    imageWeights: weights,
  });
  const emptyIds = batchCtx.emptyIds;

  // what is trained, what is frozen, where it starts
  const unetParams = base.denoiser.params;
  const teParams = textEncoder.params;
  const teJson = textEncoder.config as Record<string, unknown>;
  const teConfig = textEncoder.typedConfig;
  const alpha = f.alpha ?? f.rank;
  const components: TrainComponent[] = [];
  let frozen: Params;
  let initial: Params | undefined;
  let lora: LoraPlan | undefined;
  let unetLayers: string[] = [];
  let teLayers: string[] = [];
  if (f.method === "lora") {
    unetLayers = loraLayerNames(unetParams).filter(loraTargets(f.targets ?? UNET_LORA_TARGETS));
    if (unetLayers.length === 0)
      throw new Error(
        `finetune.targets ${JSON.stringify(f.targets)} match no linear or convolution layer of the U-Net`,
      );
    teLayers = f.text_encoder ? loraLayerNames(teParams).filter(loraTargets(TEXT_LORA_TARGETS)) : [];
    components.push(loraComponent("unet_lora", "unet.", unetParams, unetLayers, f.rank));
    if (f.text_encoder)
      components.push(loraComponent("text_encoder_lora", "text_encoder.", teParams, teLayers, f.rank));
    frozen = new Map([...prefixed("unet.", unetParams), ...prefixed("text_encoder.", teParams)]);
    const site: LoraSite = { adapter: LORA_ADAPTER, rank: f.rank, scale: alpha / f.rank };
    const targeted = new Set([
      ...unetLayers.map((l) => `unet.${l}`),
      ...teLayers.map((l) => `text_encoder.${l}`),
    ]);
    lora = (layer) => (targeted.has(layer) ? [site] : []);
  } else {
    components.push(denoiserComponent(cfg, "unet."));
    initial = prefixed("unet.", unetParams);
    if (f.text_encoder) {
      components.push(textEncoderComponent(teJson, "text_encoder."));
      for (const [k, v] of prefixed("text_encoder.", teParams)) initial.set(k, v);
      frozen = new Map();
    } else frozen = prefixed("text_encoder.", teParams);
  }

  const loader = new DataLoader(instances, {
    batchSize: prior ? t.batch_size / 2 : t.batch_size,
    rng: seed.fold("data"),
  });
  const priorLoader = prior
    ? new DataLoader(prior, { batchSize: t.batch_size - t.batch_size / 2, rng: seed.fold("prior") })
    : null;
  if (prior && t.batch_size % 2 !== 0)
    throw new Error("training.batch_size must be even with prior preservation");
  const specs = batchSpecs(model, t.batch_size, latentSize);
  delete specs["cond.encoder_hidden_states"];
  specs["cond.input_ids"] = { shape: [t.batch_size, emptyIds.length], dtype: "int64" };
  const previewPrompts = [
    ...new Set([
      ...(f.instance_prompt ? [f.instance_prompt] : data.captions.slice(0, 4)),
      ...(f.class_prompt ? [f.class_prompt] : []),
    ]),
  ];
  const unetJson = cfg.model;
  const frozenVae = vae;

  /** The U-Net and text encoder of the weights at hand (base + adapters, or the fine-tuned weights). */
  const modelsOf = (params: Params) => {
    const session = t.threads ? { session: { threads: t.threads } } : {};
    if (f.method === "lora") {
      const u = modelFromParams(unetJson, new Map(unetParams), session);
      u.lora.add(LORA_ADAPTER, adapterLayers(unetLayers, componentParams(components[0]!, params), alpha));
      const te = CLIPTextModel.fromParams(teJson, new Map(teParams));
      if (f.text_encoder)
        te.lora.add(LORA_ADAPTER, adapterLayers(teLayers, componentParams(components[1]!, params), alpha));
      return { u, te };
    }
    const u = modelFromParams(unetJson, componentParams(components[0]!, params), session);
    const te = CLIPTextModel.fromParams(
      teJson,
      f.text_encoder ? componentParams(components[1]!, params) : new Map(teParams),
    );
    return { u, te };
  };

  const described = `${data.count} images (${instances.count} to learn${prior ? `, ${prior.count} of the class "${f.class_prompt}"` : ""}) → ${f.method === "lora" ? `LoRA rank ${f.rank} on ${unetLayers.length + teLayers.length} layers` : "all weights"} of ${base.dir}`;
  return {
    components,
    batchSpecs: specs,
    batchSize: t.batch_size,
    description: described,
    frozen,
    ...(initial ? { initial } : {}),
    ...(lora ? { lora, frozenAs: "inputs" as const } : {}),
    loss: diffusionLoss(model, {
      denoiserScope: "unet",
      condition: (scope: ParamScope, b) => ({
        encoder_hidden_states: clipTextForward(scope.sub("text_encoder"), teConfig, b["cond.input_ids"]!)
          .lastHiddenState,
      }),
    }),
    batch(k) {
      const at = (l: DataLoader) =>
        l.batchAt(Math.floor(k / l.batchesPerEpoch), k % l.batchesPerEpoch).indices;
      const idx = [...at(loader)];
      if (priorLoader) for (const i of at(priorLoader)) idx.push(instances.count + i);
      return textBatch(batchCtx, idx, seed.fold("step").fold(k));
    },
    async preview(params, step) {
      const { u, te } = modelsOf(params as Params);
      try {
        const parts = {
          unet: u,
          text: { tokenizer, textEncoder: te },
          vae: frozenVae,
          latentSize,
          imageSize: size,
        };
        return await textPreview(cfg, parts, previewPrompts, step, { base: base.dir, method: f.method });
      } finally {
        u.dispose();
        te.dispose();
      }
    },
    async exportPipeline(params, step, dir) {
      if (f.method === "lora") {
        const parts: Record<string, Map<string, LoraLayer>> = {
          unet: adapterLayers(unetLayers, componentParams(components[0]!, params as Params), alpha),
        };
        if (f.text_encoder)
          parts["text_encoder"] = adapterLayers(
            teLayers,
            componentParams(components[1]!, params as Params),
            alpha,
          );
        replaceDirAtomic(dir, (tmp) => {
          writeLoraFile(join(tmp, LORA_WEIGHTS_NAME), parts);
          writeFileAtomic(
            join(tmp, "finetune.json"),
            `${JSON.stringify({ base: base.dir, method: "lora", rank: f.rank, alpha, trained_steps: step, instance_prompt: f.instance_prompt, class_prompt: f.class_prompt }, null, 2)}\n`,
          );
        });
        return;
      }
      const { u, te } = modelsOf(params as Params);
      try {
        await saveTextToImagePipeline(dir, {
          unet: u,
          textEncoder: te,
          tokenizer,
          vae: frozenVae,
          schedulerConfig: cfg.scheduler,
          info: {
            numClasses: null,
            dataset: `finetune of ${base.dir}`,
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
