/**
 * `diffuse distill`: makes a few-step student from a teacher model. `--method lcm` is latent
 * consistency distillation (Luo et al. 2023; src/train/lcm.ts): the student samples with LCMScheduler
 * in 1–8 steps and no guidance (with `--lora-rank R` or a config's `lora` section, LCM-LoRA: the
 * student is the teacher plus trained LoRA adapters, src/train/lcm-lora.ts). `--method reflow` is rectified-flow reflow (Liu et al. 2023;
 * src/train/reflow.ts) of a flow-matching teacher: the student samples with the teacher's flow Euler
 * scheduler in 1–4 steps and no guidance. Runs in a worker thread with a progress bar, periodic
 * checkpoints and sample grids, as `diffuse train`; the same command again resumes from the last
 * checkpoint (and reflow's cached pairs); Ctrl-C stops after the current step (or chunk of pairs) and saves.
 */
import { existsSync } from "node:fs";
import { basename, join } from "node:path";
import { runInWorker } from "../runtime/worker.ts";
import { readConfigFile, setField } from "../train/config-file.ts";
import type { DistillArgs, DistillEvent } from "../train/distill-trainer.ts";
import { LCM_DEFAULTS } from "../train/lcm.ts";
import { LORA_WEIGHTS_NAME } from "../train/lora-component.ts";
import { bool, num, parseFlags, str, UsageError } from "./args.ts";
import { diffuseCommand, moduleUrl } from "./paths.ts";
import { Progress } from "./progress.ts";

const HELP = `usage: diffuse distill --method lcm|reflow --teacher DIR|NAME [--out DIR] [--config FILE] [flags]

Distils a teacher into a few-step student that samples without guidance (the teacher's
classifier-free guidance is folded in).
  --method lcm     latent consistency distillation (LCM), for ε/v-prediction teachers (mnist): the
                   student starts as the teacher, learns to jump to the end of the teacher's
                   probability-flow ODE (a DDIM solver over 50 of its 1000 timesteps), and samples
                   with the LCM scheduler in 1–8 steps. A text-to-image teacher (emoji) distils on
                   the VAE latents of its captioned images (data.dataset emoji, or a caption
                   folder) and exports a StableDiffusionPipeline (configs/emoji-lcm.json).
                   LCM-LoRA (--lora-rank R, or the config's lora section: rank, alpha, targets):
                   the student is the teacher's frozen weights plus trained rank-R adapters; the run
                   writes them as OUT/pytorch_lora_weights.safetensors (for --lora on the teacher)
                   and OUT/model, the teacher with them fused in (configs/mnist-lcm-lora.json,
                   configs/emoji-lcm-lora.json).
  --method reflow  rectified-flow reflow, for flow-matching teachers (mnist-dit): the teacher's ODE
                   turns seeded noise z into images x (reflow.pairs pairs, reflow.teacher_steps Euler
                   steps, cached in the run's pairs/ folder), then the student — a copy of the
                   teacher — learns the straight flow from each x to its z (optionally, from
                   reflow.one_step_from on, the one-step jump alone), and samples with flow-euler
                   in 1–4 steps. E.g. diffuse distill --method reflow --teacher mnist-dit --out DIR
                   (configs/mnist-reflow.json).
Re-running the same command resumes from the run's last checkpoint (and reuses its pairs).

flags:
  --method lcm|reflow  the distillation (default lcm)
  --teacher DIR|NAME   the teacher: a pipeline folder, a run's folder, or a bundled model (mnist, mnist-dit,
                       emoji)
  --config FILE        a distill config (JSON: method, teacher, lcm, reflow, data, training, output;
                       configs/mnist-lcm.json, configs/emoji-lcm.json, configs/mnist-reflow.json);
                       flags override its fields
  --out DIR            run folder (default runs/<teacher name>-<method>): checkpoint/, model/, samples/,
                       metrics.jsonl (reflow: pairs/)
  --guidance W         the teacher's guidance scale distilled into the student (lcm.guidance or
                       reflow.guidance, default 1.5)
  --lora-rank R        lora.rank: distil LCM-LoRA adapters of rank R (alpha = R unless the config sets
                       lora.alpha; the teacher's default layers unless it sets lora.targets)
  --pairs N            reflow.pairs: how many (noise, image) pairs the teacher makes
  --set KEY=VALUE      override a config field, e.g. --set lcm.distance=l2 or
                       --set reflow.one_step_from=1500 (repeatable)
  --steps N            training.steps
  --batch-size N       training.batch_size
  --lr X               training.lr
  --seed N             training.seed
  --threads N          ONNX Runtime threads (default: all cores)
  --overwrite          start over even if --out has a checkpoint (reflow pairs made with other
                       settings are made again; matching ones are kept)
`;

/** Whether a raw config asks for LCM-LoRA (a `lora` section that is not null). */
const isLora = (raw: Record<string, unknown>): boolean => raw["lora"] !== undefined && raw["lora"] !== null;

/**
 * Whether `--scheduler lcm` on the teacher samples on the grid the adapters were trained on: LCMScheduler
 * built from the teacher's config takes its own original_inference_steps (50) and timestep_scaling (10);
 * the fused model/ carries the run's.
 */
function teacherGridMatches(raw: Record<string, unknown>): boolean {
  const lcm = (typeof raw["lcm"] === "object" && raw["lcm"] !== null ? raw["lcm"] : {}) as Record<
    string,
    unknown
  >;
  const n = lcm["solver_steps"] ?? LCM_DEFAULTS.solverSteps;
  const k = lcm["timestep_scaling"] ?? LCM_DEFAULTS.timestepScaling;
  return n === 50 && k === 10;
}

export async function run(argv: readonly string[]): Promise<void> {
  const p = parseFlags("distill", argv, {
    method: { type: "string" },
    teacher: { type: "string" },
    config: { type: "string" },
    out: { type: "string" },
    guidance: { type: "string" },
    pairs: { type: "string" },
    "lora-rank": { type: "string" },
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
  const configPath = str(p, "config");
  let raw: Record<string, unknown> = configPath ? readConfigFile(configPath) : {};
  const method = str(p, "method");
  if (method !== undefined) {
    if (method !== "lcm" && method !== "reflow")
      throw new UsageError(`--method must be lcm or reflow, got "${method}"`);
    raw = { ...raw, method };
  }
  const teacher = str(p, "teacher");
  if (teacher !== undefined) raw = { ...raw, teacher };
  if (raw["teacher"] === undefined)
    throw new UsageError(
      "--teacher is required: the teacher's folder or a bundled model (e.g. --teacher mnist)",
    );
  for (const kv of (p.values["set"] as string[] | undefined) ?? []) {
    const eq = kv.indexOf("=");
    if (eq <= 0) throw new UsageError(`--set takes KEY=VALUE (e.g. lcm.guidance=2), got "${kv}"`);
    raw = setField(raw, kv.slice(0, eq), kv.slice(eq + 1));
  }
  const reflow = raw["method"] === "reflow";
  const shortcuts: [string, string, { min?: number; max?: number; integer?: boolean }][] = [
    ["guidance", reflow ? "reflow.guidance" : "lcm.guidance", { min: 0, max: 50 }],
    ["pairs", "reflow.pairs", { min: 1, integer: true }],
    ["lora-rank", "lora.rank", { min: 1, integer: true }],
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
  const outDir =
    str(p, "out") ??
    join(
      "runs",
      configPath
        ? basename(configPath).replace(/\.json$/, "")
        : `${basename(String(raw["teacher"]))}-${String(raw["method"] ?? "lcm")}${isLora(raw) ? "-lora" : ""}`,
    );
  const args: DistillArgs = { config: raw, outDir, overwrite: bool(p, "overwrite") };

  if (!reflow && str(p, "pairs") !== undefined)
    throw new UsageError("--pairs is a reflow setting; add --method reflow");
  const progress = new Progress("distill");
  const pairsProgress = new Progress("pairs");
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
    await runInWorker<DistillArgs, DistillEvent, { step: number; modelDir: string }>(
      moduleUrl("train/distill-trainer"),
      "distillRun",
      args,
      {
        signal: ac.signal,
        onMessage: (ev) => {
          switch (ev.kind) {
            case "pairs":
              pairsProgress.update({
                step: ev.done,
                total: ev.total,
                rate: ev.pairsPerSec,
                fields: { made: String(ev.made), "pairs/s": ev.pairsPerSec.toFixed(1) },
              });
              if (ev.done === ev.total) {
                pairsProgress.done();
                progress.log(
                  `${ev.total} reflow pairs ready in ${join(outDir, "pairs")} (${ev.made} made, ${ev.total - ev.made} read)`,
                );
              }
              break;
            case "start":
              progress.log(
                `${ev.resumed ? `resuming ${outDir} at step ${ev.step}` : `distilling into ${outDir}`}: ${ev.params.toLocaleString("en-US")} parameters, ${ev.steps} steps`,
              );
              break;
            case "log":
              progress.update({
                step: ev.step,
                total: ev.steps,
                rate: ev.itPerSec,
                fields: {
                  loss: ev.loss.toExponential(3),
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
            case "end":
              progress.done();
              console.log(
                ev.stopped
                  ? `stopped at step ${ev.step}; run the same command to resume. Student so far: ${ev.modelDir}`
                  : `done: ${ev.step} steps. Student: ${ev.modelDir}\nSample it: ${diffuseCommand()} sample --model ${ev.modelDir} ${
                      // a text-to-image student (a StableDiffusionPipeline folder) draws from a prompt
                      existsSync(join(ev.modelDir, "text_encoder")) ? '--prompt "…"' : "--labels all"
                    } --steps ${reflow ? 1 : 4}${
                      !isLora(raw)
                        ? ""
                        : teacherGridMatches(raw)
                          ? `\nOr the adapters on the teacher: ${diffuseCommand()} sample --model ${String(raw["teacher"])} --lora ${join(outDir, LORA_WEIGHTS_NAME)} --scheduler lcm --steps 4 --guidance 1`
                          : `\nThe adapters (${join(outDir, LORA_WEIGHTS_NAME)}) were trained on an LCM grid other than LCMScheduler's defaults (50 solver steps, timestep scaling 10): sample them through ${ev.modelDir}, whose scheduler carries the run's, or pass that scheduler_config.json with --scheduler-config`
                    }`,
              );
              break;
          }
        },
      },
    );
  } finally {
    process.off("SIGINT", onSigint);
    pairsProgress.done();
    progress.done();
  }
}
