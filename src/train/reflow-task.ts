/**
 * `diffuse distill --method reflow` as a method of the distillation loop (distill-trainer.ts): the
 * teacher's pairs made or read from the run's cache (reflow-pairs.ts), then the student — a copy of
 * the teacher — trained with `diffuse train`'s flow-matching loss on them (train/reflow.ts). The
 * export is a pipeline folder of the teacher's class with its FlowMatchEulerDiscreteScheduler config
 * (deterministic) and diffuse.json sampling flow-euler, output.sample_steps (1) steps, guidance 1.
 */
import { join } from "node:path";
import { DataLoader } from "../data/loader.ts";
import { modelFromParams } from "../models/load.ts";
import { type LoadedPipeline, savePipeline } from "../pipelines/pipeline-dir.ts";
import { Rng } from "../tensor/rng.ts";
import { denoiserComponent } from "./checkpoint.ts";
import { emaDecayAt } from "./config.ts";
import { checkpointView, type DistillConfig, reflowSettings } from "./distill-config.ts";
import { type DistillMethodRun, studentPreview, studentProvenance } from "./distill-student.ts";
import { batchSpecs, diffusionLoss, objectiveOf } from "./objective.ts";
import {
  drawReflowBatch,
  type PairGeometry,
  pairDataset,
  reflowSchedulerConfig,
  reflowSigmaSampling,
  teacherPairs,
} from "./reflow.ts";
import {
  loadOrMakePairs,
  PAIR_CHUNK,
  type PairCacheOptions,
  type PairsManifest,
  weightsHash,
} from "./reflow-pairs.ts";

/** The reflow method of a run in `runDir`: its pairs first (cached in runDir/pairs), then the task. */
export async function reflowMethod(
  c: DistillConfig,
  teacher: LoadedPipeline,
  runDir: string,
  pairOptions: PairCacheOptions = {},
): Promise<DistillMethodRun> {
  if (teacher.text || teacher.vae)
    throw new Error(
      `${teacher.dir} is a text-to-image model; diffuse reflows pixel-space label models for now`,
    );
  const schedulerConfig = reflowSchedulerConfig(teacher.schedulerConfig);
  const settings = reflowSettings(c);
  const bound = teacher.denoiser.bound;
  const geo = bound.geometry;
  const size = c.data.size ?? geo.sampleSize ?? 32;
  if (size % geo.multipleOf !== 0)
    throw new Error(
      `data.size ${size} is not a multiple of ${geo.multipleOf}, as this ${bound.className} needs`,
    );
  const view = checkpointView(c, bound.config, teacher.schedulerConfig, size, geo.inChannels);
  Object.assign(view.training, reflowSigmaSampling(settings, teacher.info));
  const obj = objectiveOf(view, bound); // flow matching on the teacher's schedule (its shift), σ as asked
  const numClasses = bound.conditioning.kind === "class" ? teacher.info.numClasses : null;
  const range = (teacher.info["imageRange"] as [number, number] | undefined) ?? [-1, 1];
  const pairGeo: PairGeometry = { channels: geo.inChannels, size, numClasses, range };
  const manifest: PairsManifest = {
    format: 1,
    teacher: c.teacher,
    teacherWeights: weightsHash(teacher.denoiser.params),
    teacherConfig: bound.config as unknown as Record<string, unknown>,
    teacherScheduler: teacher.schedulerConfig,
    teacherSteps: settings.teacherSteps,
    guidance: settings.guidance,
    seed: settings.seed,
    count: settings.pairs,
    chunk: PAIR_CHUNK,
    shape: [geo.inChannels, size, size],
    numClasses,
    range,
  };
  const pairs = await loadOrMakePairs(
    join(runDir, "pairs"),
    manifest,
    (from, to) => teacherPairs(teacher.denoiser, teacher.schedulerConfig, settings, pairGeo, from, to),
    pairOptions,
  );

  const t = c.training;
  const seed = new Rng(t.seed);
  const loader = new DataLoader(pairDataset(pairs), { batchSize: t.batch_size, rng: seed.fold("data") });
  const oneStepFrom = settings.oneStepFrom;
  const sampling = { scheduler: "flow-euler", steps: c.output.sample_steps, guidance: 1 };
  return {
    view,
    emaDecay: (k) => emaDecayAt(c.reflow.ema_decay, k),
    task: {
      components: [denoiserComponent(view)],
      loss: diffusionLoss(bound),
      batchSpecs: batchSpecs(bound, t.batch_size, size),
      batchSize: t.batch_size,
      description: `${pairs.count} pairs of the teacher's ODE (${settings.teacherSteps} steps, guidance ${settings.guidance})`,
      batch: (k) =>
        drawReflowBatch(
          obj,
          pairs,
          loader,
          k,
          seed.fold("step").fold(k),
          oneStepFrom !== null && k >= oneStepFrom,
        ),
      preview: studentPreview(bound, {
        scheduler: "flow-euler",
        schedulerConfig,
        steps: c.output.sample_steps,
        numClasses,
        size,
        seed: t.seed,
        threads: t.threads,
      }),
      async exportPipeline(params, step, dir) {
        await savePipeline(dir, modelFromParams(bound.config, new Map(params)), schedulerConfig, {
          numClasses,
          dataset: typeof teacher.info.dataset === "string" ? teacher.info.dataset : "pairs",
          imageRange: range,
          ...studentProvenance(c, teacher.dir, step, {
            how: {
              guidance: settings.guidance,
              teacherSteps: settings.teacherSteps,
              pairs: settings.pairs,
              oneStepFrom,
            },
            sampling,
          }),
        });
      },
    },
  };
}
