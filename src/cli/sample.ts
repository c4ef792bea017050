/**
 * `diffuse sample`: generates images with a model folder (or the bundled `mnist`) and any sampler,
 * with classifier-free guidance; writes grid.png (generation parameters in its text chunk) and
 * samples.safetensors (images F32 [N,C,H,W] in [0,1], labels I64 [N]).
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { writeFileAtomic } from "../io/atomic.ts";
import { makeGrid } from "../io/grid.ts";
import { encodePng } from "../io/png.ts";
import { writeSafetensors } from "../io/safetensors.ts";
import { generate } from "../pipelines/generate.ts";
import { loadPipeline } from "../pipelines/pipeline-dir.ts";
import { SCHEDULER_NAMES, schedulerFor } from "../pipelines/scheduler-names.ts";
import { HostTensor } from "../tensor/host.ts";
import { readConfigFile } from "../train/config.ts";
import { bool, num, parseFlags, str, UsageError } from "./args.ts";
import { Progress } from "./progress.ts";

const HELP = `usage: diffuse sample [--model DIR|mnist] [flags]

Generates images and writes DIR/grid.png and DIR/samples.safetensors.

flags:
  --model DIR|NAME         a model folder (a run's model/, a diffusers pipeline or UNet folder) or a bundled model (default: mnist)
  --scheduler NAME         ${SCHEDULER_NAMES.join(", ")}, or a diffusers class name (default: dpm++2m)
  --karras                 Karras sigmas (DPM-Solver++, Euler, Heun)
  --scheduler-config FILE  a diffusers scheduler_config.json instead of --scheduler
  --steps N                sampling steps (default 20)
  --guidance W             classifier-free guidance scale (default 3; 1 = no guidance)
  --guidance-rescale PHI   guidance rescale in [0, 1] (default 0)
  --eta X                  DDIM's eta (default 0)
  --labels L               comma-separated class labels, or "all" (default all)
  --per-label N            images per label (default 8 with "all", else 1)
  --seed N                 seed (default 0)
  --batch N                images per forward pass (default 64)
  --out DIR                output folder (default out/)
`;

function parseLabels(s: string, numClasses: number | null): number[] | null {
  if (numClasses === null) {
    if (s !== "all") throw new UsageError("this model is unconditional: it takes no --labels");
    return null;
  }
  if (s === "all") return Array.from({ length: numClasses }, (_, i) => i);
  const out = s.split(",").map((x) => x.trim());
  return out.map((x) => {
    const v = Number(x);
    if (x === "" || !Number.isInteger(v) || v < 0 || v >= numClasses) {
      throw new UsageError(`--labels: "${x}" is not a class of this model (0..${numClasses - 1}, or "all")`);
    }
    return v;
  });
}

export async function run(argv: readonly string[]): Promise<void> {
  const p = parseFlags("sample", argv, {
    model: { type: "string" },
    scheduler: { type: "string" },
    karras: { type: "boolean" },
    "scheduler-config": { type: "string" },
    steps: { type: "string" },
    guidance: { type: "string" },
    "guidance-rescale": { type: "string" },
    eta: { type: "string" },
    labels: { type: "string" },
    "per-label": { type: "string" },
    seed: { type: "string" },
    batch: { type: "string" },
    out: { type: "string" },
  });
  if (bool(p, "help")) {
    console.log(HELP);
    return;
  }
  if (p.positionals.length) throw new UsageError(`unexpected argument "${p.positionals[0]}"`);
  const steps = num(p, "steps", { min: 1, max: 1000, integer: true }) ?? 20;
  const guidance = num(p, "guidance", { min: 0, max: 50 }) ?? 3;
  const rescale = num(p, "guidance-rescale", { min: 0, max: 1 }) ?? 0;
  const eta = num(p, "eta", { min: 0, max: 1 }) ?? 0;
  const seed = num(p, "seed", { min: 0, integer: true }) ?? 0;
  const batch = num(p, "batch", { min: 1, max: 4096, integer: true }) ?? 64;
  const outDir = str(p, "out") ?? "out";
  if (str(p, "scheduler") && str(p, "scheduler-config"))
    throw new UsageError("pass --scheduler or --scheduler-config, not both");

  const pipe = await loadPipeline(str(p, "model") ?? "mnist");
  const labelsFlag = str(p, "labels") ?? "all";
  const classes = parseLabels(labelsFlag, pipe.info.numClasses);
  const perLabel =
    num(p, "per-label", { min: 1, max: 1024, integer: true }) ?? (labelsFlag === "all" ? 8 : 1);
  const cfgPath = str(p, "scheduler-config");
  const scheduler = cfgPath
    ? schedulerFor({ config: readConfigFile(cfgPath) }, pipe.schedulerConfig)
    : schedulerFor(
        { name: str(p, "scheduler") ?? "dpm++2m", karras: bool(p, "karras") },
        pipe.schedulerConfig,
      );

  // per-label images laid out label-major within each row: with "all", a row per sample index
  const labels: number[] | null = classes ? Array.from({ length: perLabel }, () => classes).flat() : null;
  const total = labels ? labels.length : perLabel;
  const model = pipe.denoiser;
  const c = model.bound.geometry.inChannels;
  const size = model.bound.geometry.sampleSize ?? 32;
  const all = new Float32Array(total * c * size * size);
  const progress = new Progress("sample");
  const chunks = Math.ceil(total / batch);
  const t0 = performance.now();
  for (let k = 0; k < chunks; k++) {
    const lo = k * batch;
    const hi = Math.min(total, lo + batch);
    const imgs = await generate(model, scheduler, {
      labels: labels ? labels.slice(lo, hi) : hi - lo,
      numClasses: pipe.info.numClasses,
      steps,
      guidance,
      guidanceRescale: rescale,
      eta,
      seed: seed + k,
      size,
      onStep: ({ i }) => {
        const done = k * steps + i + 1;
        progress.update({
          step: done,
          total: chunks * steps,
          rate: done / ((performance.now() - t0) / 1000),
        });
      },
    });
    all.set(imgs.data, lo * c * size * size);
  }
  progress.done();
  const images = new HostTensor<"float32">(all, [total, c, size, size]);
  mkdirSync(outDir, { recursive: true });
  const params = [
    `model: ${pipe.dir}`,
    `scheduler: ${String(scheduler.config.className)}${bool(p, "karras") ? " (karras)" : ""}`,
    `steps: ${steps}`,
    `guidance: ${guidance}`,
    `guidance_rescale: ${rescale}`,
    `seed: ${seed}`,
    `labels: ${classes ? classes.join(",") : "none"}`,
    `per_label: ${perLabel}`,
  ].join(", ");
  const grid = makeGrid(images, { nrow: classes ? classes.length : 8 });
  writeFileAtomic(
    join(outDir, "grid.png"),
    encodePng(grid, { text: { parameters: params, Software: "diffuse" } }),
  );
  const tensors = new Map<string, HostTensor>([["images", images]]);
  if (labels) tensors.set("labels", HostTensor.int64(labels));
  writeSafetensors(join(outDir, "samples.safetensors"), tensors, { metadata: { parameters: params } });
  const secs = (performance.now() - t0) / 1000;
  console.log(
    `${total} images in ${secs.toFixed(1)} s → ${join(outDir, "grid.png")}, ${join(outDir, "samples.safetensors")}`,
  );
}
