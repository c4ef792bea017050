/**
 * `diffuse train`: trains a diffusion model from one JSON config (configs/mnist.json by default),
 * in a worker thread, with a progress bar, periodic checkpoints and sample grids. Running the same
 * command again resumes from the last checkpoint; Ctrl-C stops after the current step and saves.
 */
import { basename, join } from "node:path";
import { checkOutputDir } from "../io/fs-check.ts";
import { runInWorker } from "../runtime/worker.ts";
import { ConfigFieldError } from "../train/config.ts";
import { readConfigFile, setField, settableFields } from "../train/config-file.ts";
import { withBaseSections } from "../train/controlnet-task.ts";
import type { TrainArgs, TrainEvent } from "../train/trainer.ts";
import { isVaeRunConfig, vaeSettableFields } from "../train/vae-config.ts";
import type { VaeTrainEvent } from "../train/vae-trainer.ts";
import { bool, num, parseFlags, str, UsageError } from "./args.ts";
import { diffuseCommand, moduleUrl, packageRoot } from "./paths.ts";
import { Progress } from "./progress.ts";

const HELP = `usage: diffuse train [--config FILE] [--out DIR] [flags]

Trains a diffusion model. Without --config, trains the class-conditional MNIST U-Net
(configs/mnist.json). A config whose model is a UNet2DConditionModel (with text_encoder, tokenizer and vae sections)
trains text to image (configs/emoji.json). A config whose model is an AutoencoderKL trains that autoencoder
(configs/emoji-vae.json). A config with a controlnet section ({ "base": PIPELINE, … }) trains a ControlNet
on Canny edges for that frozen text-to-image pipeline (configs/emoji-controlnet.json); the base's model,
scheduler, text_encoder, tokenizer and vae sections are filled in. Re-running the same command resumes from
the run's last checkpoint.

flags:
  --config FILE        run config (JSON: model, scheduler, data, training, output)
  --out DIR            run folder (default runs/<config name>): checkpoint/, model/, samples/, metrics.jsonl
  --set KEY=VALUE      override a config field, e.g. --set training.lr=3e-4 (repeatable)
  --steps N            training.steps
  --batch-size N       training.batch_size
  --lr X               training.lr
  --seed N             training.seed
  --threads N          ONNX Runtime threads (default: all cores)
  --overwrite          start over even if --out has a checkpoint
`;

export async function run(argv: readonly string[]): Promise<void> {
  const p = parseFlags("train", argv, {
    config: { type: "string" },
    out: { type: "string" },
    set: { type: "string", multiple: true },
    steps: { type: "string" },
    "batch-size": { type: "string" },
    lr: { type: "string" },
    seed: { type: "string" },
    threads: { type: "string" },
    overwrite: { type: "boolean" },
  });
  if (bool(p, "help")) {
    console.log(HELP);
    return;
  }
  if (p.positionals.length) throw new UsageError(`unexpected argument "${p.positionals[0]}"`);
  const configPath = str(p, "config") ?? join(packageRoot(), "configs", "mnist.json");
  let raw = readConfigFile(configPath);
  if (raw["controlnet"] !== undefined) {
    try {
      raw = await withBaseSections(raw);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  }
  for (const kv of (p.values["set"] as string[] | undefined) ?? []) {
    const eq = kv.indexOf("=");
    if (eq <= 0) throw new UsageError(`--set takes KEY=VALUE (e.g. training.lr=3e-4), got "${kv}"`);
    const settable = isVaeRunConfig(raw) ? vaeSettableFields() : settableFields(raw);
    try {
      raw = setField(raw, kv.slice(0, eq), kv.slice(eq + 1), settable);
    } catch (e) {
      if (e instanceof ConfigFieldError) throw new UsageError(e.message);
      throw e;
    }
  }
  const shortcuts: [string, string, { min?: number; integer?: boolean }][] = [
    ["steps", "training.steps", { min: 1, integer: true }],
    ["batch-size", "training.batch_size", { min: 1, integer: true }],
    ["lr", "training.lr", { min: 0 }],
    ["seed", "training.seed", { min: 0, integer: true }],
    ["threads", "training.threads", { min: 1, integer: true }],
  ];
  for (const [flag, field, range] of shortcuts) {
    const v = num(p, flag, range);
    if (v !== undefined) raw = setField(raw, field, JSON.stringify(v));
  }
  const outDir = str(p, "out") ?? join("runs", basename(configPath).replace(/\.json$/, ""));
  try {
    checkOutputDir(outDir, "--out");
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const args: TrainArgs = { config: raw, outDir, overwrite: bool(p, "overwrite") };
  const vae = isVaeRunConfig(raw);
  await runTraining(args, {
    module: vae ? "train/vae-trainer" : "train/trainer",
    fn: vae ? "trainVaeRun" : "trainRun",
    next: (modelDir) =>
      `Sample it: ${diffuseCommand()} sample --model ${modelDir} ${raw["controlnet"] !== undefined ? '--prompt "…" --control EDGES.png' : raw["text_encoder"] !== undefined ? '--prompt "…"' : "--labels all"}`,
  });
}

/**
 * Runs a training job in a worker with a progress bar: Ctrl-C stops after the current step and
 * saves a checkpoint (twice: quits now). `next` says what to do with the finished model.
 */
export async function runTraining(
  args: TrainArgs,
  job: { module: string; fn: string; next: (modelDir: string) => string },
): Promise<void> {
  const outDir = args.outDir;

  const progress = new Progress("train");
  const ac = new AbortController();
  let interrupts = 0;
  const onSigint = () => {
    interrupts++;
    if (interrupts === 1) {
      progress.log(
        "stopping after this step and saving a checkpoint… (Ctrl-C again to quit now; the last checkpoint stays intact)",
      );
      ac.abort();
    } else process.exit(130);
  };
  process.on("SIGINT", onSigint);
  try {
    await runInWorker<TrainArgs, TrainEvent | VaeTrainEvent, { step: number; modelDir: string }>(
      moduleUrl(job.module),
      job.fn,
      args,
      {
        signal: ac.signal,
        onMessage: (ev) => {
          switch (ev.kind) {
            case "start":
              progress.log(
                `${ev.resumed ? `resuming ${outDir} at step ${ev.step}` : `training into ${outDir}`}: ${ev.params.toLocaleString("en-US")} parameters, ${ev.steps} steps`,
              );
              break;
            case "log":
              progress.update({
                step: ev.step,
                total: ev.steps,
                rate: ev.itPerSec,
                fields: {
                  loss: ev.loss.toFixed(4),
                  lr: ev.lr.toExponential(1),
                  "it/s": ev.itPerSec.toFixed(2),
                  "img/s": ev.imgPerSec.toFixed(0),
                },
              });
              break;
            case "checkpoint":
              progress.log(`checkpoint at step ${ev.step}: ${ev.dir}`);
              break;
            case "samples":
              progress.log(`samples at step ${ev.step}: ${ev.path}`);
              break;
            case "eval":
              progress.log(`held-out PSNR at step ${ev.step}: ${ev.psnr.toFixed(2)} dB`);
              break;
            case "end":
              progress.done();
              if ("scalingFactor" in ev) {
                console.log(
                  `${ev.stopped ? `stopped at step ${ev.step}; run the same command to resume` : `done: ${ev.step} steps`}. AutoencoderKL: ${ev.modelDir} (held-out PSNR ${ev.psnr.toFixed(2)} dB, scaling_factor ${ev.scalingFactor.toPrecision(5)})`,
                );
                break;
              }
              console.log(
                ev.stopped
                  ? `stopped at step ${ev.step}; run the same command to resume. Model so far: ${ev.modelDir}`
                  : `done: ${ev.step} steps. Model: ${ev.modelDir}\n${job.next(ev.modelDir)}`,
              );
              break;
          }
        },
      },
    );
  } finally {
    process.off("SIGINT", onSigint);
    progress.done();
  }
}
