/**
 * The training loop of `diffuse train`, run in a worker thread: data, the compiled training step,
 * learning-rate warm-up and decay, EMA, periodic atomic checkpoints, sample grids and a metrics log
 * (metrics.jsonl, read by the studio). Every step's randomness comes from a stream keyed by the step
 * number, and the data order from the step number too, so a run resumed from a checkpoint continues
 * exactly as the uninterrupted run would have (same seed → same weights).
 *
 * The exported model/ is written aside and swapped in as a whole (io/atomic.ts), so a reader (or a run
 * killed mid-export) sees the previous export or the new one, never weights of one step under the
 * diffuse.json of another. A run resumed from a checkpoint whose export or preview grid was cut short
 * writes them before it trains on.
 */
import { existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { recoverReplacedDir, replaceDirAtomicAsync, writeFileAtomic, writeJsonAtomic } from "../io/atomic.ts";
import { makeGrid } from "../io/grid.ts";
import { encodePng } from "../io/png.ts";
import type { WorkerContext } from "../runtime/worker.ts";
import type { HostTensor } from "../tensor/host.ts";
import { initParams, type Params } from "../tensor/params.ts";
import { Rng } from "../tensor/rng.ts";
import {
  componentBuffers,
  loadCheckpoint,
  prefixedSpecs,
  refuseStepsBelowCheckpoint,
  saveCheckpoint,
} from "./checkpoint.ts";
import { emaDecayAt, learningRate, resolveConfig, type TrainConfig } from "./config.ts";
import { controlNetTask } from "./controlnet-task.ts";
import { finetuneTask } from "./finetune-task.ts";
import { appendMetrics, trimMetrics } from "./metrics-log.ts";
import { pixelTask } from "./pixel-task.ts";
import type { TrainTask } from "./task.ts";
import { textTask } from "./text-task.ts";
import { compileTrainStep, type TrainState } from "./train-step.ts";

/** The task a config describes: a ControlNet or a fine-tune of a pipeline, text to image in latent space when it has a text encoder, else pixels. */
async function taskFor(cfg: TrainConfig, runDir: string): Promise<TrainTask> {
  if (cfg.controlnet) return controlNetTask(cfg, runDir);
  if (cfg.finetune) return finetuneTask(cfg, runDir);
  return cfg.text_encoder ? textTask(cfg, runDir) : pixelTask(cfg);
}

/**
 * The weights the step takes as constants: the task's frozen ones and its components' buffers (the
 * values a config determines, e.g. SD3's position table: DenoiserDef.buffers) — never trained, and
 * not among the trainable parameters below.
 */
function frozenOf(task: TrainTask): Params | undefined {
  const frozen = new Map([...(task.frozen ?? []), ...componentBuffers(task.components)]);
  return frozen.size > 0 ? frozen : undefined;
}

/** The trainable parameters at step 0: the task's given values, the initialisers' for the rest. */
function startingParams(task: TrainTask, rng: Rng): Params {
  const specs = prefixedSpecs(task.components);
  const fresh = initParams(
    specs.filter((s) => !task.initial?.has(s.name)),
    rng,
  );
  return new Map(specs.map((s) => [s.name, task.initial?.get(s.name) ?? fresh.get(s.name)!]));
}

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

/** The preview grid of a step: samples/step-NNNNNN.png. */
export const samplesPath = (runDir: string, step: number): string =>
  join(runDir, "samples", `step-${String(step).padStart(6, "0")}.png`);

/** Writes a preview grid (its parameters in the PNG's text chunk) under samples/. */
export async function writeSamples(runDir: string, task: TrainTask, state: TrainState): Promise<string> {
  const p = await task.preview(state.ema ?? state.params, state.step);
  const path = samplesPath(runDir, state.step);
  mkdirSync(join(runDir, "samples"), { recursive: true });
  writeFileAtomic(
    path,
    encodePng(makeGrid(p.images, { nrow: p.nrow }), { text: { parameters: p.parameters } }),
  );
  return path;
}

/**
 * The step an exported model says it was trained for: diffuse.json's `trainedSteps`, or a LoRA
 * export's finetune.json `trained_steps`; null when there is no readable export.
 */
export function exportedStep(modelDir: string): number | null {
  for (const [file, key] of [
    ["diffuse.json", "trainedSteps"],
    ["finetune.json", "trained_steps"],
  ] as const) {
    const path = join(modelDir, file);
    if (!existsSync(path)) continue;
    try {
      const v = (JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>)[key];
      return typeof v === "number" ? v : null;
    } catch {
      return null;
    }
  }
  return null;
}

/** Writes a task's export into `modelDir` as a whole: built in a sibling folder, then swapped in. */
export async function exportModelAtomic(
  task: Pick<TrainTask, "exportPipeline">,
  params: ReadonlyMap<string, HostTensor<"float32">>,
  step: number,
  modelDir: string,
): Promise<void> {
  await replaceDirAtomicAsync(modelDir, (tmp) => task.exportPipeline(params, step, tmp));
}

export async function trainRun(
  args: TrainArgs,
  ctx: WorkerContext<TrainEvent>,
): Promise<{ step: number; modelDir: string }> {
  const cfg = resolveConfig(args.config);
  const runDir = args.outDir;
  if (!args.overwrite) refuseStepsBelowCheckpoint(runDir, cfg.training.steps);
  if (args.overwrite)
    for (const f of ["checkpoint", "samples", "metrics.jsonl", "model"])
      rmSync(join(runDir, f), { recursive: true, force: true });
  mkdirSync(runDir, { recursive: true });
  const task = await taskFor(cfg, runDir);
  const t = cfg.training;
  const session = t.threads ? { threads: t.threads } : {};
  const frozen = frozenOf(task);
  const trainStep = await compileTrainStep(task.loss, task.batchSpecs, {
    adamw: { beta1: t.adam_beta1, beta2: t.adam_beta2, eps: t.adam_eps, weightDecay: t.weight_decay },
    ...(t.grad_clip !== null ? { clipGradNorm: t.grad_clip } : {}),
    ...(frozen ? { frozen } : {}),
    ...(task.lora ? { lora: task.lora } : {}),
    ...(task.frozenAs ? { frozenAs: task.frozenAs } : {}),
    session,
  });
  const seed = new Rng(t.seed);
  const resumed = args.overwrite ? null : await loadCheckpoint(runDir, cfg, task.components);
  const state = resumed ?? trainStep.initState(startingParams(task, seed.fold("init")));
  writeJsonAtomic(join(runDir, "config.json"), cfg);
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
    await trainStep.sync(state); // (after steps on a GPU, the weights come back from it)
    await exportModelAtomic(task, state.ema ?? state.params, state.step, modelDir);
    return modelDir;
  };
  const checkpoint = async () => {
    await trainStep.sync(state);
    await saveCheckpoint(runDir, cfg, state, task.components);
    ctx.post({ kind: "checkpoint", step: state.step, dir: join(runDir, "checkpoint") });
  };

  // a run killed between its renames keeps its previous export in model.old-…: put it back
  recoverReplacedDir(modelDir);
  if (resumed && state.step < t.steps) {
    // killed after the checkpoint, before its export or preview grid was written: write them now
    if (exportedStep(modelDir) !== state.step) await exportModel();
    const sampleStep = cfg.output.sample_every > 0 && state.step % cfg.output.sample_every === 0;
    if (sampleStep && !existsSync(samplesPath(runDir, state.step))) {
      await trainStep.sync(state);
      ctx.post({ kind: "samples", step: state.step, path: await writeSamples(runDir, task, state) });
    }
  }

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
    const feeds = await task.batch(k);
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
    if (state.step % cfg.output.checkpoint_every === 0 && state.step < t.steps) {
      await checkpoint();
      await exportModel();
    }
    if (cfg.output.sample_every > 0 && state.step % cfg.output.sample_every === 0) {
      await trainStep.sync(state);
      ctx.post({
        kind: "samples",
        step: state.step,
        path: await writeSamples(runDir, task, state),
      });
    }
  }
  await checkpoint();
  await exportModel();
  // the step's session stays in the runtime cache: a worker ends with its job, and a caller that
  // trains again in the same thread (tests) reuses it
  ctx.post({ kind: "end", step: state.step, stopped, modelDir });
  return { step: state.step, modelDir };
}
