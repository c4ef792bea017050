/**
 * The training loop of an autoencoder run (latent diffusion's first stage, Rombach et al. 2022):
 * an AutoencoderKL trained on images with the objective of vae-objective.ts — reconstruction + KL,
 * and from `disc_start` on a PatchGAN, the generator and the discriminator alternating, each step one
 * ONNX Runtime session run. Held-out PSNR and reconstruction grids every `eval_every` steps,
 * atomic checkpoints, a metrics log, and at the end the LDM scaling: `scaling_factor = 1 / std` of the
 * training latents, exported as a diffusers AutoencoderKL folder (`<runDir>/model`, written aside and
 * swapped in as a whole: a run killed mid-export leaves the previous export).
 *
 * As the denoiser trainer, every step's randomness comes from a stream keyed by the step number and
 * the data order from the step number too, so a resumed run continues as the uninterrupted one.
 */
import { mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import type { ImageDataset } from "../data/dataset.ts";
import { DataLoader } from "../data/loader.ts";
import { recoverReplacedDir, replaceDirAtomicAsync, writeFileAtomic, writeJsonAtomic } from "../io/atomic.ts";
import { makeGrid } from "../io/grid.ts";
import { encodePng } from "../io/png.ts";
import { type AutoencoderKLConfig, resolveVaeConfig } from "../models/vae/config.ts";
import { AutoencoderKL } from "../models/vae/model.ts";
import type { SessionOptions } from "../runtime/options.ts";
import type { WorkerContext } from "../runtime/worker.ts";
import { HostTensor } from "../tensor/host.ts";
import { countParams } from "../tensor/params.ts";
import { Rng } from "../tensor/rng.ts";
import { refuseStepsBelowCheckpoint } from "./checkpoint.ts";
import { appendMetrics, trimMetrics } from "./metrics-log.ts";
import type { TrainArgs } from "./trainer.ts";
import { loadVaeCheckpoint, saveVaeCheckpoint } from "./vae-checkpoint.ts";
import { resolveVaeTrainConfig, type VaeTrainConfig } from "./vae-config.ts";
import { loadVaeData, splitHoldout, type VaeData } from "./vae-data.ts";
import { latentStd, reconstructionEval } from "./vae-eval.ts";
import { frozenSide, loadInitVae } from "./vae-init.ts";
import { metric, VaeSteps } from "./vae-steps.ts";

export type VaeTrainEvent =
  | { kind: "start"; step: number; steps: number; params: number; resumed: boolean; description: string }
  | {
      kind: "log";
      step: number;
      steps: number;
      /** The generator's loss (rec + kl_weight·KL [+ λ·G]), averaged over the window. */
      loss: number;
      rec: number;
      kl: number;
      /** The discriminator's hinge loss (null before it starts). */
      dLoss: number | null;
      /** λ of the adversarial term (null before it starts). */
      ganWeight: number | null;
      lr: number;
      gradNorm: number;
      itPerSec: number;
      imgPerSec: number;
    }
  | { kind: "eval"; step: number; psnr: number }
  | { kind: "samples"; step: number; path: string }
  | { kind: "checkpoint"; step: number; dir: string }
  | { kind: "end"; step: number; stopped: boolean; modelDir: string; psnr: number; scalingFactor: number };

export interface VaeTrainOptions {
  /** The run folder: checkpoint/, samples/, metrics.jsonl, config.json, model/. */
  readonly runDir: string;
  readonly onEvent?: (e: VaeTrainEvent) => void;
  /** Stops after the current step (saving a checkpoint and the model so far). */
  readonly signal?: AbortSignal;
  /** Start over even if the folder has a checkpoint. */
  readonly overwrite?: boolean;
  /** Stop after this many steps in this session (the run stays resumable). */
  readonly stopAfter?: number;
  /** Training images instead of config.data (pixels in [0, 1]). */
  readonly data?: ImageDataset;
  /** Held-out images for the PSNR (default: config.data's, or the last data.holdout of `data`). */
  readonly holdout?: ImageDataset;
}

export interface VaeTrainResult {
  readonly step: number;
  readonly modelDir: string;
  /** Held-out PSNR (dB) of the exported weights. */
  readonly psnr: number;
  readonly scalingFactor: number;
}

/** Images in [0, 1] → the model's [−1, 1] (a copy). */
function toModelRange(d: Float32Array, shape: readonly number[]): HostTensor<"float32"> {
  return new HostTensor(
    Float32Array.from(d, (v) => v * 2 - 1),
    shape,
  );
}

function checkData(data: VaeData, c: AutoencoderKLConfig, cfg: VaeTrainConfig): void {
  for (const [name, d] of Object.entries(data) as [string, ImageDataset][]) {
    if (d.channels !== c.inChannels || d.height !== cfg.data.size || d.width !== cfg.data.size) {
      throw new Error(
        `the ${name} images are ${d.channels}×${d.height}×${d.width}, but the run needs ${c.inChannels}×${cfg.data.size}×${cfg.data.size} (model.in_channels, data.size)`,
      );
    }
  }
  if (data.train.count < cfg.training.batch_size) {
    throw new Error(
      `the data has ${data.train.count} training images, fewer than one batch of ${cfg.training.batch_size}`,
    );
  }
}

/** Trains an AutoencoderKL as the config says; resumes from `<runDir>/checkpoint` when there is one. */
export async function trainVae(
  config: Record<string, unknown>,
  opts: VaeTrainOptions,
): Promise<VaeTrainResult> {
  const cfg = resolveVaeTrainConfig(config);
  const c = resolveVaeConfig(cfg.model);
  const { runDir } = opts;
  const post = opts.onEvent ?? (() => {});
  if (!opts.overwrite) refuseStepsBelowCheckpoint(runDir, cfg.training.steps);
  if (opts.overwrite)
    for (const f of ["checkpoint", "samples", "metrics.jsonl", "model"])
      rmSync(join(runDir, f), { recursive: true, force: true });
  mkdirSync(runDir, { recursive: true });
  const data: VaeData = !opts.data
    ? loadVaeData(cfg.data)
    : opts.holdout
      ? { train: opts.data, holdout: opts.holdout }
      : splitHoldout(opts.data, cfg.data.holdout);
  const train = data.train;
  checkData(data, c, cfg);

  const t = cfg.training;
  const session: SessionOptions = t.threads ? { threads: t.threads } : {};
  const size = cfg.data.size;
  const init = t.init_from !== null ? await loadInitVae(t.init_from, c, session) : null;
  const stepper = await VaeSteps.compile(c, t, size, session, init && frozenSide(init.params, t.trainable));
  const seed = new Rng(t.seed);
  const frozenNames = new Set(stepper.frozen?.keys() ?? []);
  const resumed = opts.overwrite
    ? null
    : loadVaeCheckpoint(runDir, cfg, stepper.vaeSpecs, stepper.discSpecs, frozenNames);
  if (resumed) stepper.restore(resumed);
  const state = resumed?.vae ?? stepper.initState(seed, init?.params ?? null);
  writeJsonAtomic(join(runDir, "config.json"), cfg);
  const metricsPath = join(runDir, "metrics.jsonl");
  trimMetrics(metricsPath, state.step);
  // a run killed between the export's renames keeps its previous export in model.old-…: put it back
  recoverReplacedDir(join(runDir, "model"));
  const loader = new DataLoader(train, { batchSize: t.batch_size, rng: seed.fold("data") });
  post({
    kind: "start",
    step: state.step,
    steps: t.steps,
    params: countParams(stepper.vaeSpecs),
    resumed: resumed !== null,
    description:
      `${train.count} training images, ${data.holdout.count} held out` +
      (init ? `; from ${t.init_from}${t.trainable === "decoder" ? ", its encoder frozen" : ""}` : ""),
  });

  const evaluator = reconstructionEval(c, data.holdout, Math.min(t.batch_size, data.holdout.count), session);
  const weights = () => stepper.allWeights(state.ema ?? state.params);
  const evaluate = async (): Promise<number> => {
    await stepper.sync(state);
    const r = await evaluator.run(weights());
    const path = join(runDir, "samples", `step-${String(state.step).padStart(6, "0")}.png`);
    mkdirSync(join(runDir, "samples"), { recursive: true });
    const grid = makeGrid(r.grid(cfg.output.sample_count), {
      nrow: Math.min(cfg.output.sample_count, data.holdout.count),
      range: [-1, 1],
    });
    const parameters = `AutoencoderKL reconstructions (top: held-out originals), step ${state.step}, PSNR ${r.psnr.toFixed(2)} dB`;
    writeFileAtomic(path, encodePng(grid, { text: { parameters } }));
    appendMetrics(metricsPath, { step: state.step, psnr: r.psnr });
    post({ kind: "eval", step: state.step, psnr: r.psnr });
    post({ kind: "samples", step: state.step, path });
    return r.psnr;
  };
  const checkpoint = async () => {
    await stepper.sync(state);
    await saveVaeCheckpoint(runDir, cfg, stepper.snapshot(state));
    post({ kind: "checkpoint", step: state.step, dir: join(runDir, "checkpoint") });
  };

  const first = state.step;
  const win = { start: performance.now(), steps: 0, loss: 0, rec: 0, kl: 0, d: 0, dSteps: 0 };
  let stopped = false;
  let lastEval: { step: number; psnr: number } | null = null;
  while (state.step < t.steps) {
    if (opts.signal?.aborted || (opts.stopAfter !== undefined && state.step - first >= opts.stopAfter)) {
      stopped = true;
      break;
    }
    const k = state.step;
    const b = loader.batchAt(Math.floor(k / loader.batchesPerEpoch), k % loader.batchesPerEpoch);
    const {
      gen: r,
      disc: d,
      lr,
    } = await stepper.step(state, toModelRange(b.images.data, b.images.shape), seed.fold("step").fold(k), k);
    if (d) {
      win.d += d.loss;
      win.dSteps++;
    }
    if (!Number.isFinite(r.loss)) {
      throw new Error(
        `the loss became ${r.loss} at step ${state.step}; lower training.lr (now ${t.lr}) or set training.grad_clip`,
      );
    }
    win.steps++;
    win.loss += r.loss;
    win.rec += metric(r, "rec");
    win.kl += metric(r, "kl");
    if (state.step % cfg.output.log_every === 0 || state.step === t.steps) {
      const secs = (performance.now() - win.start) / 1000;
      const ev: VaeTrainEvent = {
        kind: "log",
        step: state.step,
        steps: t.steps,
        loss: win.loss / win.steps,
        rec: win.rec / win.steps,
        kl: win.kl / win.steps,
        dLoss: win.dSteps > 0 ? win.d / win.dSteps : null,
        ganWeight: win.dSteps > 0 ? stepper.ganWeight : null,
        lr,
        gradNorm: r.gradNorm,
        itPerSec: win.steps / secs,
        imgPerSec: (win.steps * t.batch_size) / secs,
      };
      appendMetrics(metricsPath, {
        step: ev.step,
        loss: ev.loss,
        rec: ev.rec,
        kl: ev.kl,
        d_loss: ev.dLoss,
        gan_weight: ev.ganWeight,
        lr,
        grad_norm: r.gradNorm,
        img_per_s: ev.imgPerSec,
      });
      post(ev);
      Object.assign(win, { start: performance.now(), steps: 0, loss: 0, rec: 0, kl: 0, d: 0, dSteps: 0 });
    }
    if (state.step % cfg.output.checkpoint_every === 0 && state.step < t.steps) await checkpoint();
    if (cfg.output.eval_every > 0 && state.step % cfg.output.eval_every === 0)
      lastEval = { step: state.step, psnr: await evaluate() };
  }
  await checkpoint();
  const psnr = lastEval?.step === state.step ? lastEval.psnr : await evaluate();
  const modelDir = join(runDir, "model");
  // a frozen encoder keeps its latents: their scaling stays as it was
  const keep =
    t.trainable === "decoder" && init
      ? { scalingFactor: init.scalingFactor, shiftFactor: init.shiftFactor }
      : null;
  const scalingFactor = await exportVae(
    c,
    cfg,
    weights(),
    train,
    modelDir,
    seed.fold("scaling"),
    session,
    keep,
  );
  init?.dispose();
  evaluator.dispose();
  post({ kind: "end", step: state.step, stopped, modelDir, psnr, scalingFactor });
  return { step: state.step, modelDir, psnr, scalingFactor };
}

/**
 * Writes the trained autoencoder as a diffusers folder with latent diffusion's scaling: the
 * posterior samples of up to `scaling_samples` training images, scaling_factor = 1 / their std —
 * or the scaling `keep` gives (an encoder that did not train).
 */
async function exportVae(
  c: AutoencoderKLConfig,
  cfg: VaeTrainConfig,
  params: ReadonlyMap<string, HostTensor<"float32">>,
  train: ImageDataset,
  dir: string,
  rng: Rng,
  session: SessionOptions,
  keep: { scalingFactor: number; shiftFactor: number | null } | null,
): Promise<number> {
  const vae = AutoencoderKL.fromParams(c, new Map(params), { session });
  const scalingFactor = keep
    ? keep.scalingFactor
    : 1 / (await latentStd(vae, train, cfg.training.scaling_samples, rng));
  const shiftFactor = keep ? keep.shiftFactor : c.shiftFactor;
  const out = AutoencoderKL.fromParams({ ...c, scalingFactor, shiftFactor }, vae.params, { session });
  await replaceDirAtomicAsync(dir, (tmp) => out.savePretrained(tmp));
  vae.dispose();
  return scalingFactor;
}

/** `trainVae` as a worker job (`diffuse train` with an AutoencoderKL config runs it off the main thread). */
export async function trainVaeRun(
  args: TrainArgs,
  ctx: WorkerContext<VaeTrainEvent>,
): Promise<VaeTrainResult> {
  return trainVae(args.config, {
    runDir: args.outDir,
    onEvent: (e) => ctx.post(e),
    signal: ctx.signal,
    ...(args.overwrite ? { overwrite: true } : {}),
    ...(args.stopAfter !== undefined ? { stopAfter: args.stopAfter } : {}),
  });
}
