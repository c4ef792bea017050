/**
 * The training loop of `diffuse train`, run in a worker thread: data, the compiled training step,
 * learning-rate warm-up and decay, EMA, periodic atomic checkpoints, sample grids and a metrics log
 * (metrics.jsonl, read by the studio). Every step's randomness comes from a stream keyed by the step
 * number, and the data order from the step number too, so a run resumed from a checkpoint continues
 * exactly as the uninterrupted run would have (same seed → same weights).
 */
import { appendFileSync, existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import type { ImageDataset } from "../data/dataset.ts";
import { loadImageFolder } from "../data/image-folder.ts";
import { DataLoader } from "../data/loader.ts";
import { loadMnist } from "../data/mnist.ts";
import type { Prediction } from "../diffusion/parameterization.ts";
import { writeFileAtomic, writeJsonAtomic } from "../io/atomic.ts";
import { makeGrid } from "../io/grid.ts";
import { encodePng } from "../io/png.ts";
import { modelFromParams } from "../models/load.ts";
import { type BoundDenoiser, resolveDenoiser } from "../models/registry.ts";
import { generate } from "../pipelines/generate.ts";
import { defaultSchedulerName, parametersText, type SamplingOptions } from "../pipelines/options.ts";
import { savePipeline } from "../pipelines/pipeline-dir.ts";
import { schedulerFor } from "../pipelines/scheduler-names.ts";
import type { WorkerContext } from "../runtime/worker.ts";
import { Scheduler } from "../samplers/scheduler.ts";
import type { HostTensor } from "../tensor/host.ts";
import { initParams } from "../tensor/params.ts";
import { Rng } from "../tensor/rng.ts";
import { loadCheckpoint, saveCheckpoint } from "./checkpoint.ts";
import { emaDecayAt, learningRate, resolveConfig, type TrainConfig } from "./config.ts";
import { batchSpecs, diffusionLoss, drawBatch, type Objective } from "./objective.ts";
import { compileTrainStep, type TrainState } from "./train-step.ts";

export interface TrainArgs {
  /** The raw config (defaults are filled in here). */
  config: Record<string, unknown>;
  outDir: string;
  /** Start over even if the folder has a checkpoint. */
  overwrite?: boolean;
  /** Stop after this many steps in this session (for tests; the run stays resumable). */
  stopAfter?: number;
}

export type TrainEvent =
  | { kind: "start"; step: number; steps: number; params: number; resumed: boolean }
  | {
      kind: "log";
      step: number;
      steps: number;
      loss: number;
      lr: number;
      gradNorm: number;
      itPerSec: number;
      imgPerSec: number;
    }
  | { kind: "checkpoint"; step: number; dir: string }
  | { kind: "samples"; step: number; path: string }
  | { kind: "end"; step: number; stopped: boolean; modelDir: string };

const PRED: Record<string, Prediction> = {
  epsilon: "epsilon",
  v_prediction: "v",
  sample: "x0",
  flow_prediction: "flow",
};

function loadData(cfg: TrainConfig): ImageDataset {
  if (cfg.data.dataset === "mnist") {
    if (cfg.data.size !== 28 && cfg.data.size !== 32)
      throw new Error(`data.size for mnist must be 28 or 32, got ${cfg.data.size}`);
    return loadMnist({ split: "train", size: cfg.data.size });
  }
  return loadImageFolder(cfg.data.path!, { size: cfg.data.size, channels: cfg.data.channels as 1 | 3 });
}

function objectiveOf(cfg: TrainConfig, model: BoundDenoiser): Objective {
  const scheduler = Scheduler.fromConfig(cfg.scheduler);
  const flow = scheduler.alphasCumprod === null;
  const pt = String(cfg.scheduler["prediction_type"] ?? (flow ? "flow_prediction" : "epsilon"));
  const prediction = flow ? "flow" : PRED[pt];
  if (!prediction)
    throw new Error(`scheduler.prediction_type "${pt}" is not one of epsilon, v_prediction, sample`);
  const t = cfg.training;
  const spec = model.conditioning;
  if (spec.kind === "class" && spec.nullLabel === null) {
    throw new Error(
      `${model.className} takes class labels that are not a class table (class_embed_type); diffuse trains class tables only`,
    );
  }
  const weighting =
    t.loss_weighting === "min-snr"
      ? { kind: "min-snr" as const, gamma: t.snr_gamma }
      : t.loss_weighting === "edm"
        ? { kind: "edm" as const }
        : { kind: "uniform" as const };
  const obj: Objective = {
    prediction,
    alphasCumprod: scheduler.alphasCumprod,
    numTrainTimesteps: Number(cfg.scheduler["num_train_timesteps"] ?? 1000),
    weighting,
    timesteps:
      t.timestep_sampling === "logit-normal"
        ? { kind: "logit-normal", mean: t.logit_mean, std: t.logit_std }
        : { kind: "uniform" },
    nullLabel: spec.kind === "class" ? spec.nullLabel : null,
    condDropout: t.cond_dropout,
  };
  return obj;
}

/** Batch images in [0, 1] → model space [−1, 1]. */
function toModelRange(x: HostTensor<"float32">): HostTensor<"float32"> {
  const d = x.data;
  for (let i = 0; i < d.length; i++) d[i] = d[i]! * 2 - 1;
  return x;
}

async function writeSamples(
  runDir: string,
  cfg: TrainConfig,
  state: TrainState,
  numClasses: number | null,
): Promise<string> {
  const model = modelFromParams(
    cfg.model,
    new Map(state.ema ?? state.params),
    cfg.training.threads ? { session: { threads: cfg.training.threads } } : {},
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
    seed: cfg.training.seed,
  };
  const preview = schedulerFor({ name: opts.scheduler }, cfg.scheduler);
  const images = await generate(model, preview, {
    labels,
    numClasses,
    steps: opts.steps,
    guidance: opts.guidance,
    seed: opts.seed,
    size: cfg.data.size,
  }).finally(() => model.dispose());
  const path = join(runDir, "samples", `step-${String(state.step).padStart(6, "0")}.png`);
  mkdirSync(join(runDir, "samples"), { recursive: true });
  const grid = makeGrid(images, { nrow: numClasses ?? 8 });
  writeFileAtomic(
    path,
    encodePng(grid, {
      text: {
        parameters: parametersText(opts, {
          step: state.step,
          labels: numClasses ? "all" : null,
          extra: { count: Array.isArray(labels) ? labels.length : labels, size: cfg.data.size },
        }),
      },
    }),
  );
  return path;
}

/** Keeps metrics.jsonl consistent with a resumed run: drops lines past the checkpoint's step. */
function trimMetrics(path: string, step: number): void {
  if (!existsSync(path)) return;
  const kept = readFileSync(path, "utf8")
    .split("\n")
    .filter((l) => {
      if (!l.trim()) return false;
      try {
        return (JSON.parse(l) as { step: number }).step <= step;
      } catch {
        return false;
      }
    });
  writeFileAtomic(path, kept.length ? `${kept.join("\n")}\n` : "");
}

export async function trainRun(
  args: TrainArgs,
  ctx: WorkerContext<TrainEvent>,
): Promise<{ step: number; modelDir: string }> {
  const cfg = resolveConfig(args.config);
  const runDir = args.outDir;
  if (args.overwrite)
    for (const f of ["checkpoint", "samples", "metrics.jsonl", "model"])
      rmSync(join(runDir, f), { recursive: true, force: true });
  mkdirSync(runDir, { recursive: true });
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
  const session = t.threads ? { threads: t.threads } : {};
  const trainStep = await compileTrainStep(
    diffusionLoss(model),
    batchSpecs(model, t.batch_size, cfg.data.size),
    {
      adamw: { beta1: t.adam_beta1, beta2: t.adam_beta2, eps: t.adam_eps, weightDecay: t.weight_decay },
      ...(t.grad_clip !== null ? { clipGradNorm: t.grad_clip } : {}),
      session,
    },
  );
  const seed = new Rng(t.seed);
  const resumed = args.overwrite ? null : loadCheckpoint(runDir, cfg);
  const state = resumed ?? trainStep.initState(initParams(model.paramSpecs(), seed.fold("init")));
  writeJsonAtomic(join(runDir, "config.json"), cfg);
  const metricsPath = join(runDir, "metrics.jsonl");
  trimMetrics(metricsPath, state.step);
  const loader = new DataLoader(data, { batchSize: t.batch_size, rng: seed.fold("data") });
  ctx.post({
    kind: "start",
    step: state.step,
    steps: t.steps,
    params: trainStep.specs.reduce((a, s) => a + s.shape.reduce((p, q) => p * q, 1), 0),
    resumed: resumed !== null,
  });

  const exportModel = async () => {
    await trainStep.sync(state); // (after steps on a GPU, the weights come back from it)
    const modelDir = join(runDir, "model");
    const exported = modelFromParams(cfg.model, new Map(state.ema ?? state.params));
    await savePipeline(modelDir, exported, cfg.scheduler, {
      numClasses,
      dataset: cfg.data.dataset,
      trainedSteps: state.step,
      imageRange: [-1, 1],
    });
    return modelDir;
  };
  const checkpoint = async () => {
    await trainStep.sync(state);
    await saveCheckpoint(runDir, cfg, state);
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
    const b = loader.batchAt(Math.floor(k / loader.batchesPerEpoch), k % loader.batchesPerEpoch);
    const feeds = drawBatch(obj, toModelRange(b.images), b.labels, seed.fold("step").fold(k));
    const lr = learningRate(t, k);
    const r = await trainStep.step(state, feeds, lr, emaDecayAt(t.ema_decay, k));
    if (!Number.isFinite(r.loss)) {
      throw new Error(
        `the loss became ${r.loss} at step ${state.step}; lower training.lr (now ${t.lr}) or set training.grad_clip`,
      );
    }
    windowSteps++;
    windowLoss += r.loss;
    if (state.step % cfg.output.log_every === 0 || state.step === t.steps) {
      const secs = (performance.now() - windowStart) / 1000;
      const ev = {
        kind: "log" as const,
        step: state.step,
        steps: t.steps,
        loss: windowLoss / windowSteps,
        lr,
        gradNorm: r.gradNorm,
        itPerSec: windowSteps / secs,
        imgPerSec: (windowSteps * t.batch_size) / secs,
      };
      appendFileSync(
        metricsPath,
        `${JSON.stringify({ step: ev.step, loss: ev.loss, lr, grad_norm: r.gradNorm, img_per_s: ev.imgPerSec, time: Date.now() })}\n`,
      );
      ctx.post(ev);
      windowStart = performance.now();
      windowSteps = 0;
      windowLoss = 0;
    }
    if (state.step % cfg.output.checkpoint_every === 0 && state.step < t.steps) {
      await checkpoint();
      await exportModel();
    }
    if (cfg.output.sample_every > 0 && state.step % cfg.output.sample_every === 0) {
      await trainStep.sync(state);
      ctx.post({
        kind: "samples",
        step: state.step,
        path: await writeSamples(runDir, cfg, state, numClasses),
      });
    }
  }
  await checkpoint();
  const modelDir = await exportModel();
  // the step's session stays in the runtime cache: a worker ends with its job, and a caller that
  // trains again in the same thread (tests) reuses it
  ctx.post({ kind: "end", step: state.step, stopped, modelDir });
  return { step: state.step, modelDir };
}
