/**
 * The pixel-space task: a denoiser (any registered class) trained on images — MNIST or a folder —
 * with class labels (and condition dropout to the null label) or none. The weights are the
 * denoiser's alone, unprefixed; the export is a DDPMPipeline / DiTPipeline folder.
 */
import type { ImageDataset } from "../data/dataset.ts";
import { loadImageFolder } from "../data/image-folder.ts";
import { DataLoader } from "../data/loader.ts";
import { loadMnist } from "../data/mnist.ts";
import { modelFromParams } from "../models/load.ts";
import { resolveDenoiser } from "../models/registry.ts";
import { generate } from "../pipelines/generate.ts";
import { defaultSchedulerName, parametersText, type SamplingOptions } from "../pipelines/options.ts";
import { savePipeline } from "../pipelines/pipeline-dir.ts";
import { schedulerFor } from "../pipelines/scheduler-names.ts";
import type { HostTensor } from "../tensor/host.ts";
import { Rng } from "../tensor/rng.ts";
import { denoiserComponent } from "./checkpoint.ts";
import type { TrainConfig } from "./config.ts";
import { batchSpecs, diffusionLoss, drawBatch, objectiveOf } from "./objective.ts";
import type { TrainTask } from "./task.ts";

function loadData(cfg: TrainConfig): ImageDataset {
  if (cfg.data.dataset === "mnist") {
    if (cfg.data.size !== 28 && cfg.data.size !== 32)
      throw new Error(`data.size for mnist must be 28 or 32, got ${cfg.data.size}`);
    return loadMnist({ split: "train", size: cfg.data.size });
  }
  if (cfg.data.dataset !== "folder")
    throw new Error(
      `data.dataset "${cfg.data.dataset}" needs a text-to-image model (a UNet2DConditionModel)`,
    );
  return loadImageFolder(cfg.data.path!, { size: cfg.data.size, channels: cfg.data.channels as 1 | 3 });
}

/** Batch images in [0, 1] → model space [−1, 1]. */
function toModelRange(x: HostTensor<"float32">): HostTensor<"float32"> {
  const d = x.data;
  for (let i = 0; i < d.length; i++) d[i] = d[i]! * 2 - 1;
  return x;
}

export function pixelTask(cfg: TrainConfig): TrainTask {
  const model = resolveDenoiser(cfg.model);
  const obj = objectiveOf(cfg, model);
  const spec = model.conditioning;
  const numClasses = spec.kind === "class" ? spec.numClasses : null;
  const data = loadData(cfg);
  if (data.channels !== model.geometry.inChannels) {
    throw new Error(
      `the data has ${data.channels} channels but model.in_channels is ${model.geometry.inChannels}`,
    );
  }
  if (cfg.data.size % model.geometry.multipleOf !== 0) {
    throw new Error(
      `data.size ${cfg.data.size} is not a multiple of ${model.geometry.multipleOf}, as this ${model.className} needs`,
    );
  }
  if (numClasses !== null && data.labels) {
    for (const l of data.labels) {
      if (l >= numClasses)
        throw new Error(
          `the data has class ${l} but the ${model.className} has ${numClasses} classes (labels 0..${numClasses - 1}; ${obj.nullLabel} is "no class")`,
        );
    }
  }
  const t = cfg.training;
  const seed = new Rng(t.seed);
  const loader = new DataLoader(data, { batchSize: t.batch_size, rng: seed.fold("data") });
  return {
    components: [denoiserComponent(cfg)],
    loss: diffusionLoss(model),
    batchSpecs: batchSpecs(model, t.batch_size, cfg.data.size),
    batchSize: t.batch_size,
    description: `${cfg.data.dataset}: ${data.count} images`,
    batch(k) {
      const b = loader.batchAt(Math.floor(k / loader.batchesPerEpoch), k % loader.batchesPerEpoch);
      return drawBatch(obj, toModelRange(b.images), b.labels, seed.fold("step").fold(k));
    },
    async preview(params, step) {
      const m = modelFromParams(
        cfg.model,
        new Map(params),
        t.threads ? { session: { threads: t.threads } } : {},
      );
      const labels = numClasses ? Array.from({ length: 2 * numClasses }, (_, i) => i % numClasses) : 16;
      // preview grids use the default sampler for the run's training schedule (DPM-Solver++, or flow Euler)
      const opts: SamplingOptions = {
        scheduler: defaultSchedulerName(cfg.scheduler),
        karras: false,
        steps: cfg.output.sample_steps,
        guidance: numClasses ? cfg.output.sample_guidance : 1,
        guidanceRescale: 0,
        eta: 0,
        seed: t.seed,
      };
      const sampler = schedulerFor({ name: opts.scheduler }, cfg.scheduler);
      const images = await generate(m, sampler, {
        labels,
        numClasses,
        steps: opts.steps,
        guidance: opts.guidance,
        seed: opts.seed,
        size: cfg.data.size,
      }).finally(() => m.dispose());
      return {
        images,
        nrow: numClasses ?? 8,
        parameters: parametersText(opts, {
          step,
          labels: numClasses ? "all" : null,
          extra: { count: Array.isArray(labels) ? labels.length : labels, size: cfg.data.size },
        }),
      };
    },
    async exportPipeline(params, step, dir) {
      const exported = modelFromParams(cfg.model, new Map(params));
      await savePipeline(dir, exported, cfg.scheduler, {
        numClasses,
        dataset: cfg.data.dataset,
        trainedSteps: step,
        imageRange: [-1, 1],
      });
    },
  };
}
