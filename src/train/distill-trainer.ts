/**
 * The loop of `diffuse distill`, run in a worker thread, for either method (distill-student.ts says
 * what a method gives the loop). The student starts as a copy of the teacher and trains in one
 * training-step graph per step. Progress events, atomic checkpoints, sample grids and metrics.jsonl
 * as `diffuse train` writes them (the same TrainEvent stream, plus reflow's `pairs` events). Every
 * step's randomness and batch come from the step number, so a resumed run ends with the weights of
 * an uninterrupted one.
 *
 * --method lcm: the student learns the teacher's consistency function (train/lcm.ts): student forward
 * and backward, the teacher's guided DDIM step, the EMA target network, AdamW and the target's EMA
 * update in one graph. The exported model is the EMA of the student (with lcm.target "ema", the target
 * network θ⁻, as LCM's released students), a pipeline folder of the teacher's class with an
 * LCMScheduler config and diffuse.json sampling defaults (lcm, 4 steps, guidance 1: the teacher's
 * guidance is distilled in). A text-to-image teacher distils on its captioned images' latents
 * (lcm-text.ts) and exports a StableDiffusionPipeline folder. With a `lora` section the student is
 * the teacher plus trained LoRA adapters (LCM-LoRA, lcm-lora.ts): model/ is the teacher with them
 * fused in, and pytorch_lora_weights.safetensors beside it the adapters themselves.
 * --method reflow: the teacher's ODE makes (noise, image) pairs first, then the student learns their
 * straight flow (train/reflow.ts, reflow-task.ts); it exports with the teacher's flow scheduler.
 */
import { mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import type { ImageDataset } from "../data/dataset.ts";
import { loadImageFolder } from "../data/image-folder.ts";
import { DataLoader } from "../data/loader.ts";
import { loadMnist } from "../data/mnist.ts";
import { writeJsonAtomic } from "../io/atomic.ts";
import { modelFromParams } from "../models/load.ts";
import {
  disposePipeline,
  type LoadedPipeline,
  loadPipeline,
  savePipeline,
} from "../pipelines/pipeline-dir.ts";
import type { WorkerContext } from "../runtime/worker.ts";
import { PREDICTIONS, Scheduler } from "../samplers/scheduler.ts";
import type { HostTensor } from "../tensor/host.ts";
import type { Params } from "../tensor/params.ts";
import { Rng } from "../tensor/rng.ts";
import { loadCheckpoint, refuseStepsBelowCheckpoint, saveCheckpoint } from "./checkpoint.ts";
import { learningRate } from "./config.ts";
import { checkpointView, type DistillConfig, lcmSettings, resolveDistillConfig } from "./distill-config.ts";
import {
  type DistillMethodRun,
  lcmProvenance,
  studentPreview,
  studentProvenance,
} from "./distill-student.ts";
import { drawLcmBatch, type LcmPlan, type LcmSettings, lcmBatchSpecs, lcmPlan } from "./lcm.ts";
import { type LcmStudent, lcmStudent } from "./lcm-student.ts";
import { lcmTextMethod } from "./lcm-text.ts";
import { LORA_WEIGHTS_NAME } from "./lora-component.ts";
import { appendMetrics, trimMetrics } from "./metrics-log.ts";
import { reflowMethod } from "./reflow-task.ts";
import type { TrainTask } from "./task.ts";
import { compileTrainStep } from "./train-step.ts";
import { exportModelAtomic, type TrainEvent, writeSamples } from "./trainer.ts";

/** The loop's events: `diffuse train`'s, and reflow's pair making (after each chunk of pairs). */
export type DistillEvent =
  | TrainEvent
  | { kind: "pairs"; done: number; total: number; made: number; pairsPerSec: number };

export interface DistillArgs {
  /** The raw config (defaults are filled in here). */
  config: Record<string, unknown>;
  outDir: string;
  /** Start over even if the folder has a checkpoint. */
  overwrite?: boolean;
  /** Stop after this many steps in this session (tests; the run stays resumable). */
  stopAfter?: number;
}

/**
 * The LCMScheduler config of a student: the teacher's training schedule (its betas as its own class
 * reads them: the classes' defaults differ) and prediction type, the solver grid as
 * `original_inference_steps`, κ as `timestep_scaling`.
 */
export function lcmSchedulerConfig(
  teacher: Readonly<Record<string, unknown>>,
  settings: LcmSettings,
): Record<string, unknown> {
  const c = Scheduler.fromConfig(teacher).config;
  if (c.className === "FlowMatchEulerDiscreteScheduler" || !("predictionType" in c))
    throw new Error(
      `LCM distils a variance-preserving teacher; this one samples with ${c.className} (a flow-matching teacher is for --method reflow)`,
    );
  return {
    _class_name: "LCMScheduler",
    num_train_timesteps: c.numTrainTimesteps,
    beta_start: c.betaStart,
    beta_end: c.betaEnd,
    beta_schedule: c.betaSchedule,
    ...(c.trainedBetas ? { trained_betas: c.trainedBetas } : {}),
    rescale_betas_zero_snr: c.rescaleBetasZeroSnr,
    prediction_type: c.predictionType,
    original_inference_steps: settings.solverSteps,
    timestep_scaling: settings.timestepScaling,
    clip_sample: false,
    set_alpha_to_one: true,
    steps_offset: 0,
    timestep_spacing: "leading",
  };
}

function loadData(c: DistillConfig, size: number, channels: number): ImageDataset {
  if (c.data.dataset === "emoji")
    throw new Error(
      'data.dataset "emoji" is captioned images, for a text-to-image teacher; this teacher takes "mnist" or an image "folder"',
    );
  if (c.data.dataset === "mnist") {
    if (size !== 28 && size !== 32) throw new Error(`data.size for mnist must be 28 or 32, got ${size}`);
    return loadMnist({ split: "train", size });
  }
  return loadImageFolder(c.data.path!, { size, channels: channels as 1 | 3 });
}

/**
 * The teacher's plan: its class, prediction type and guidance, checked, on the schedule of the
 * student's LCMScheduler config (so the student samples on the ᾱ it was distilled on).
 */
export function teacherPlan(
  teacher: LoadedPipeline,
  c: DistillConfig,
): { plan: LcmPlan; scheduler: Record<string, unknown> } {
  if (teacher.vae && !teacher.text)
    throw new Error(
      `${teacher.dir} is a latent model without text (a ${teacher.pipelineClass}); diffuse distils pixel-space models and text-to-image (StableDiffusionPipeline) models`,
    );
  const settings = lcmSettings(c);
  const scheduler = lcmSchedulerConfig(teacher.schedulerConfig, settings);
  const lcm = Scheduler.fromConfig(scheduler);
  const pt = "predictionType" in lcm.config ? lcm.config.predictionType : "flow_prediction";
  return { plan: lcmPlan(teacher.denoiser.bound, PREDICTIONS[pt], lcm.alphasCumprod, settings), scheduler };
}

/** The distillation as a task of the training loop's shape: batches, previews, the exported pipeline. */
function lcmTask(
  c: DistillConfig,
  student: LcmStudent,
  teacher: LoadedPipeline,
  plan: LcmPlan,
  schedulerConfig: Record<string, unknown>,
  size: number,
): TrainTask {
  const bound = plan.model;
  const data = loadData(c, size, bound.geometry.inChannels);
  if (data.channels !== bound.geometry.inChannels)
    throw new Error(`the data has ${data.channels} channels, the teacher takes ${bound.geometry.inChannels}`);
  const numClasses = teacher.info.numClasses;
  const range = (teacher.info["imageRange"] as [number, number] | undefined) ?? [-1, 1];
  const t = c.training;
  const seed = new Rng(t.seed);
  const loader = new DataLoader(data, { batchSize: t.batch_size, rng: seed.fold("data") });
  const toModel = (x: HostTensor<"float32">) => {
    const [lo, hi] = range;
    for (let i = 0; i < x.data.length; i++) x.data[i] = lo + x.data[i]! * (hi - lo);
    return x;
  };
  const preview = studentPreview(bound, {
    scheduler: "lcm",
    schedulerConfig,
    steps: c.output.sample_steps,
    numClasses,
    size,
    seed: t.seed,
    threads: t.threads,
  });
  return {
    ...student.train,
    batchSpecs: lcmBatchSpecs(plan, t.batch_size, size),
    batchSize: t.batch_size,
    description: `${c.data.dataset}: ${data.count} images → ${student.description}`,
    batch(k) {
      const b = loader.batchAt(Math.floor(k / loader.batchesPerEpoch), k % loader.batchesPerEpoch);
      return drawLcmBatch(
        plan,
        toModel(b.images),
        numClasses === null ? null : b.labels,
        seed.fold("step").fold(k),
      );
    },
    preview: (params, step) => preview(student.weights(params), step),
    async exportPipeline(params, step, dir) {
      await savePipeline(dir, modelFromParams(bound.config, student.weights(params)), schedulerConfig, {
        numClasses,
        dataset: c.data.dataset,
        imageRange: range,
        ...studentProvenance(c, teacher.dir, step, lcmProvenance(c, student.how)),
      });
      student.exportBeside?.(params);
    },
  };
}

/**
 * The LCM method: the teacher's plan, the task, and the target network's feeds (train/lcm.ts); a
 * text-to-image teacher distils on latents with its captions (lcm-text.ts).
 */
async function lcmMethod(
  c: DistillConfig,
  teacher: LoadedPipeline,
  runDir: string,
): Promise<DistillMethodRun> {
  const { plan, scheduler } = teacherPlan(teacher, c);
  if (teacher.text) return lcmTextMethod(c, teacher, plan, scheduler, runDir);
  const bound = plan.model;
  const size = c.data.size ?? bound.geometry.sampleSize ?? 32;
  const view = checkpointView(c, bound.config, teacher.schedulerConfig, size, bound.geometry.inChannels);
  const student = lcmStudent(c, plan, teacher, view, runDir);
  return {
    view,
    task: lcmTask(c, student, teacher, plan, scheduler, size),
    stateFeeds: student.stateFeeds,
    emaDecay: student.emaDecay,
  };
}

export async function distillRun(
  args: DistillArgs,
  ctx: WorkerContext<DistillEvent>,
): Promise<{ step: number; modelDir: string }> {
  const c = resolveDistillConfig(args.config);
  const runDir = args.outDir;
  if (!args.overwrite) refuseStepsBelowCheckpoint(runDir, c.training.steps);
  if (args.overwrite)
    for (const f of ["checkpoint", "samples", "metrics.jsonl", "model", LORA_WEIGHTS_NAME])
      rmSync(join(runDir, f), { recursive: true, force: true });
  mkdirSync(runDir, { recursive: true });
  const teacher = await loadPipeline(c.teacher);
  try {
    const method =
      c.method === "lcm"
        ? await lcmMethod(c, teacher, runDir)
        : await reflowMethod(c, teacher, runDir, {
            regenerate: args.overwrite === true,
            signal: ctx.signal,
            onProgress: (p) =>
              ctx.post({
                kind: "pairs",
                done: p.done,
                total: p.total,
                made: p.made,
                pairsPerSec: p.seconds > 0 ? p.made / p.seconds : 0,
              }),
          });
    return await distillWith(c, teacher, method, args, ctx);
  } finally {
    disposePipeline(teacher);
  }
}

async function distillWith(
  c: DistillConfig,
  teacher: LoadedPipeline,
  method: DistillMethodRun,
  args: DistillArgs,
  ctx: WorkerContext<DistillEvent>,
): Promise<{ step: number; modelDir: string }> {
  const runDir = args.outDir;
  const { view, task } = method;
  const t = c.training;
  const trainStep = await compileTrainStep(task.loss, task.batchSpecs, {
    adamw: { beta1: t.adam_beta1, beta2: t.adam_beta2, eps: t.adam_eps, weightDecay: t.weight_decay },
    ...(t.grad_clip !== null ? { clipGradNorm: t.grad_clip } : {}),
    ...(task.frozen ? { frozen: task.frozen } : {}),
    ...(task.lora ? { lora: task.lora } : {}),
    ...(task.frozenAs ? { frozenAs: task.frozenAs } : {}),
    session: t.threads ? { threads: t.threads } : {},
  });
  const resumed = args.overwrite ? null : await loadCheckpoint(runDir, view, task.components);
  // θ (and LCM's θ⁻) = the teacher's weights, or (LCM-LoRA) the adapters' start: copies, as the
  // step replaces the state's tensors
  const state = resumed ?? trainStep.initState(copyParams(task.initial ?? teacher.denoiser.params));
  writeJsonAtomic(join(runDir, "config.json"), c);
  const metricsPath = join(runDir, "metrics.jsonl");
  trimMetrics(metricsPath, state.step);
  ctx.post({
    kind: "start",
    step: state.step,
    steps: t.steps,
    params: trainStep.specs.reduce((a, s) => a + s.shape.reduce((p, q) => p * q, 1), 0),
    resumed: resumed !== null,
  });
  const modelDir = join(runDir, "model");
  const exportModel = async () => {
    await trainStep.sync(state);
    await exportModelAtomic(task, state.ema!, state.step, modelDir);
    return modelDir;
  };
  const checkpoint = async () => {
    await trainStep.sync(state);
    await saveCheckpoint(runDir, view, state, task.components);
    ctx.post({ kind: "checkpoint", step: state.step, dir: join(runDir, "checkpoint") });
  };

  const first = state.step;
  let windowStart = performance.now();
  let windowSteps = 0;
  let windowLoss = 0;
  let stopped = false;
  while (state.step < t.steps) {
    if (ctx.signal.aborted || (args.stopAfter !== undefined && state.step - first >= args.stopAfter)) {
      stopped = true;
      break;
    }
    const k = state.step;
    let feeds = await task.batch(k);
    if (method.stateFeeds) {
      await trainStep.sync(state); // (LCM's target weights are read from the state: on a GPU, bring them back)
      feeds = { ...feeds, ...method.stateFeeds(state) };
    }
    const lr = learningRate(view.training, k);
    const r = await trainStep.step(state, feeds, lr, method.emaDecay(k));
    if (!Number.isFinite(r.loss))
      throw new Error(
        `the loss became ${r.loss} at step ${state.step}; lower training.lr (now ${t.lr}) or set training.grad_clip`,
      );
    windowSteps++;
    windowLoss += r.loss;
    if (state.step % c.output.log_every === 0 || state.step === t.steps) {
      const secs = (performance.now() - windowStart) / 1000;
      const ev = {
        kind: "log" as const,
        step: state.step,
        steps: t.steps,
        loss: windowLoss / windowSteps,
        lr,
        gradNorm: r.gradNorm,
        itPerSec: windowSteps / secs,
        imgPerSec: (windowSteps * task.batchSize) / secs,
      };
      appendMetrics(metricsPath, {
        step: ev.step,
        loss: ev.loss,
        lr,
        grad_norm: r.gradNorm,
        img_per_s: ev.imgPerSec,
      });
      ctx.post(ev);
      windowStart = performance.now();
      windowSteps = 0;
      windowLoss = 0;
    }
    if (state.step % c.output.checkpoint_every === 0 && state.step < t.steps) {
      await checkpoint();
      await exportModel();
    }
    if (c.output.sample_every > 0 && state.step % c.output.sample_every === 0) {
      await trainStep.sync(state);
      ctx.post({ kind: "samples", step: state.step, path: await writeSamples(runDir, task, state) });
    }
  }
  await checkpoint();
  await exportModel();
  ctx.post({ kind: "end", step: state.step, stopped, modelDir });
  return { step: state.step, modelDir };
}

function copyParams(p: Params): Params {
  return new Map([...p].map(([k, v]) => [k, v.clone()]));
}
