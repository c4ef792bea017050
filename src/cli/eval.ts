/**
 * `diffuse eval`: scores MNIST samples with the bundled digit classifier (src/eval/mnist-eval.ts):
 * conditional accuracy, mean confidence, and the Fréchet distance in the classifier's feature space
 * next to the real-vs-real distance. Reads `images` F32 [N, 1, H, W] in [0, 1] and `labels` I64 [N]
 * from a safetensors file, as `diffuse sample` writes them.
 *
 * `diffuse eval --model DIR` scores an emoji text-to-image model (src/eval/emoji-eval.ts): it
 * generates one image per prompt for training captions and for the held-out compositions, at the
 * model's recommended settings (or the given flags), and reports the emoji judge's identity top-1/5,
 * vendor accuracy and Fréchet distances for each set apart.
 *
 * `diffuse eval --model DIR --control` scores an edge ControlNet (src/eval/control-edges.ts): for
 * held-out emoji it generates from each caption with the image's Canny edges as control (scale 1) and
 * without, and reports the edge F1 of the generated images against those edges (2-pixel tolerance).
 */
import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import { DigitClassifier } from "../eval/classify.ts";
import {
  bsdsTolerance,
  type ControlEdgeReport,
  emojiControlSet,
  evalControlEdges,
  pipelineCanny,
} from "../eval/control-edges.ts";
import { evalEmoji, formatEmojiReport } from "../eval/emoji-eval.ts";
import { evaluateMnist, type MnistEvalResult } from "../eval/mnist-eval.ts";
import { readSafetensors } from "../io/safetensors.ts";
import { parametersText, samplingDefaults } from "../pipelines/options.ts";
import { disposePipeline, loadPipeline } from "../pipelines/pipeline-dir.ts";
import { imageSize, pipelineGenerate, takesControl, takesPrompts } from "../pipelines/run.ts";
import { schedulerFor } from "../pipelines/scheduler-names.ts";
import type { HostTensor } from "../tensor/host.ts";
import { bool, num, type Parsed, parseFlags, str, UsageError } from "./args.ts";
import { Progress } from "./progress.ts";

const HELP = `usage: diffuse eval --samples <dir | file.safetensors> [--json]
       diffuse eval --model <dir | emoji> [--prompts N] [--scheduler NAME] [--steps N] [--guidance W] [--seed N] [--json]
       diffuse eval --model <controlnet pipeline dir> --control [--prompts N] [--tolerance PX[,PX…]] [--relayout MIN] [sampling flags] [--json]

Scores generated MNIST digits with a classifier trained on the MNIST training split; or, with
--model, generates emoji for training captions and held-out compositions and scores them with the
emoji judge (identity top-1/top-5, vendor accuracy, Fréchet distances; each set apart).

flags:
  --samples <path>     samples.safetensors, or a directory holding one, with "images"
                       F32 [N, 1, 32, 32] (or 28×28) in [0, 1] and "labels" I64 [N]
                       (the requested digits; without them only the Fréchet distance is judged)
  --classifier <dir>   another classifier (config.json + model.safetensors; default: the bundled one)
  --control            an edge ControlNet's edge agreement: held-out emoji generated from their captions with their
                       Canny edges as control and without; edge F1 against those edges (--prompts N, default 200)
  --relayout MIN       with --control: each held-out emoji first shrunk by a factor from MIN to 1 and placed at
                       random (image and edges alike; seeded), so the caption no longer tells the outline's place
  --tolerance PX       edge F1's matching distance in pixels (default 2); a comma list scores the same
                       images at each (bsds: the Berkeley benchmark's 0.0075 of the image diagonal)
  --json               print the figures as JSON

figures:
  accuracy             share of samples the classifier reads as the requested digit
  confidence           mean probability the classifier gives the requested digit
  Fréchet distance     FD in the classifier's feature space to 500 held-out real digits,
                       next to the FD of as many other held-out real digits (same sample size)`;

const FLAGS = {
  samples: { type: "string" },
  model: { type: "string" },
  prompts: { type: "string" },
  scheduler: { type: "string" },
  steps: { type: "string" },
  guidance: { type: "string" },
  seed: { type: "string" },
  batch: { type: "string" },
  classifier: { type: "string" },
  control: { type: "boolean" },
  tolerance: { type: "string" },
  relayout: { type: "string" },
  json: { type: "boolean" },
} as const;

/** The samples file: the path itself, or samples.safetensors inside a directory. */
export function samplesFile(path: string): string {
  if (!existsSync(path)) throw new Error(`${path} does not exist; pass the output of \`diffuse sample\``);
  if (statSync(path).isDirectory()) {
    const file = join(path, "samples.safetensors");
    if (!existsSync(file)) {
      throw new Error(
        `${path} holds no samples.safetensors; pass the file itself or the directory \`diffuse sample\` wrote`,
      );
    }
    return file;
  }
  return path;
}

/** Reads and checks `images` and `labels` from a samples file. */
export function readSamples(file: string): { images: HostTensor; labels: HostTensor | null } {
  const st = readSafetensors(file);
  const images = st.tensors.get("images");
  const names = [...st.tensors.keys()].map((k) => `"${k}"`).join(", ") || "none";
  if (!images)
    throw new Error(`${file} has no "images" tensor (it has ${names}); expected images F32 [N, 1, 32, 32]`);
  if (images.dtype !== "float32") {
    throw new Error(
      `${file}: "images" is ${st.dtypes.get("images")}; expected a float tensor (F32) with values in [0, 1]`,
    );
  }
  const s = images.shape;
  if (s.length !== 4 || s[1] !== 1 || s[2] !== s[3] || (s[2] !== 32 && s[2] !== 28)) {
    throw new Error(
      `${file}: "images" has shape [${s}]; expected [N, 1, 32, 32] or [N, 1, 28, 28] greyscale MNIST digits`,
    );
  }
  const labels = st.tensors.get("labels") ?? null;
  if (labels) {
    if (labels.dtype !== "int64" && labels.dtype !== "int32") {
      throw new Error(
        `${file}: "labels" is ${st.dtypes.get("labels")}; expected integer class indices (I64)`,
      );
    }
    if (labels.shape.length !== 1 || labels.shape[0] !== s[0]) {
      throw new Error(`${file}: "labels" has shape [${labels.shape}]; expected [${s[0]}], one per image`);
    }
  }
  return { images, labels };
}

const pct = (v: number | null) => (v === null ? "—" : `${(100 * v).toFixed(1)}%`);

/** The figures as a small table. */
export function formatReport(r: MnistEvalResult, source: string): string {
  const row = (name: string, a: string, b: string) =>
    `  ${name.padEnd(22)}${a.padStart(10)}${b.padStart(14)}`;
  const lines = [
    `MNIST judge: ${r.n} samples from ${source}`,
    row("", "samples", "real digits"),
    row("conditional accuracy", pct(r.accuracy), pct(r.real.accuracy)),
    row("mean confidence", r.meanConfidence.toFixed(3), r.real.meanConfidence.toFixed(3)),
    row("Fréchet distance", r.frechet.toFixed(3), r.frechetRealVsReal.toFixed(3)),
    `  ratio to real-vs-real: ${r.frechetRatio.toFixed(2)}× (FD over ${r.frechetSize} images vs 500 held-out digits${
      r.frechetSets > 1 ? `, mean of ${r.frechetSets} disjoint sets of samples` : ""
    })`,
  ];
  if (r.perClassAccuracy) {
    lines.push(`  per class: ${r.perClassAccuracy.map((a, c) => `${c}: ${pct(a)}`).join("  ")}`);
  } else {
    lines.push("  no labels: unconditional samples, accuracy not judged");
  }
  lines.push(`  predicted: ${r.predictedCounts.map((k, c) => `${c}: ${k}`).join("  ")}`);
  return lines.join("\n");
}

export async function run(argv: readonly string[]): Promise<void> {
  const p = parseFlags("eval", argv, FLAGS);
  if (bool(p, "help")) {
    console.log(HELP);
    return;
  }
  if (p.positionals.length > 0) {
    throw new UsageError(`unexpected argument "${p.positionals[0]}"; pass the samples with --samples <path>`);
  }
  if (bool(p, "control") && str(p, "model") === undefined)
    throw new UsageError("--control scores a ControlNet pipeline: pass --model DIR");
  if (str(p, "relayout") !== undefined && !bool(p, "control"))
    throw new UsageError("--relayout re-lays out the control set: use it with --control");
  if (str(p, "model") !== undefined) {
    if (str(p, "samples") !== undefined) throw new UsageError("pass --samples or --model, not both");
    await evalModel(p);
    return;
  }
  const path = str(p, "samples");
  if (path === undefined)
    throw new UsageError(
      `--samples is required (a samples.safetensors file or its directory), or --model DIR for a text-to-image model`,
    );
  const file = samplesFile(path);
  const { images, labels } = readSamples(file);
  const dir = str(p, "classifier");
  const classifier = dir === undefined ? await DigitClassifier.load() : await DigitClassifier.load(dir);
  try {
    const r = await evaluateMnist(images, labels === null ? null : labels.toArray(), { classifier });
    console.log(bool(p, "json") ? JSON.stringify({ source: file, ...r }, null, 2) : formatReport(r, file));
  } finally {
    classifier.dispose();
  }
}

/** Generates and scores an emoji text-to-image model (training prompts and held-out compositions). */
async function evalModel(p: Parsed): Promise<void> {
  const pipe = await loadPipeline(str(p, "model")!);
  try {
    if (!takesPrompts(pipe))
      throw new UsageError(
        `${pipe.dir} is not a text-to-image model; for a label model run \`diffuse sample\` and pass its output with --samples`,
      );
    const d = samplingDefaults(pipe);
    const opts = {
      ...d,
      ...(str(p, "scheduler") !== undefined ? { scheduler: str(p, "scheduler")! } : {}),
      ...(str(p, "steps") !== undefined
        ? { steps: num(p, "steps", { min: 1, max: 1000, integer: true })! }
        : {}),
      ...(str(p, "guidance") !== undefined ? { guidance: num(p, "guidance", { min: 0, max: 50 })! } : {}),
      ...(str(p, "seed") !== undefined ? { seed: num(p, "seed", { min: 0, integer: true })! } : {}),
    };
    if (bool(p, "control")) {
      await evalControl(p, pipe, opts);
      return;
    }
    const scheduler = schedulerFor({ name: opts.scheduler, karras: opts.karras }, pipe.schedulerConfig);
    const prompts = num(p, "prompts", { min: 1, max: 10000, integer: true }) ?? 500;
    const batchSize = num(p, "batch", { min: 1, max: 1024, integer: true }) ?? 64;
    let call = 0;
    const progress = new Progress("eval");
    const t0 = performance.now();
    const r = await evalEmoji(
      (ps) =>
        pipelineGenerate(pipe, scheduler, {
          prompts: ps,
          steps: opts.steps,
          guidance: opts.guidance,
          guidanceRescale: opts.guidanceRescale,
          eta: opts.eta,
          seed: opts.seed + call++,
        }),
      {
        prompts,
        batchSize,
        range: "0,1",
        onProgress: ({ split, done, total }) =>
          progress.update({
            step: done,
            total,
            rate: done / ((performance.now() - t0) / 1000),
            fields: { set: split },
          }),
      },
    );
    progress.done();
    const source = `${pipe.dir} (${parametersText(opts)})`;
    console.log(bool(p, "json") ? JSON.stringify({ source, ...r }, null, 2) : formatEmojiReport(r, source));
  } finally {
    disposePipeline(pipe);
  }
}

/** The edge-agreement figures as a small table: one block per tolerance. */
export function formatControlReport(r: ControlEdgeReport, source: string): string {
  const row = (name: string, a: string, b: string, c: string) =>
    `  ${name.padEnd(16)}${a.padStart(11)}${b.padStart(9)}${c.padStart(7)}`;
  const f = (v: number) => v.toFixed(3);
  const lines = [
    `edge agreement: ${r.n} held-out emoji from ${source}`,
    `  Canny ${JSON.stringify(r.canny)}`,
  ];
  for (const t of r.rows) {
    lines.push(
      `  tolerance ${+t.tolerance.toFixed(3)} px`,
      row("", "precision", "recall", "F1"),
      row("with control", f(t.withControl.precision), f(t.withControl.recall), f(t.withControl.f1)),
      row("without", f(t.without.precision), f(t.without.recall), f(t.without.f1)),
      row("chance", f(t.unpaired.precision), f(t.unpaired.recall), f(t.unpaired.f1)),
    );
  }
  lines.push("  (chance: images made without control against another emoji's edges)");
  return lines.join("\n");
}

/** `--tolerance`: pixels, or a comma list of them (`bsds`: 0.0075 of the image diagonal). */
function tolerancesFlag(p: Parsed, size: number): number[] {
  const raw = str(p, "tolerance");
  if (raw === undefined) return [2];
  return raw.split(",").map((part) => {
    const t = part.trim();
    const v = t === "bsds" ? bsdsTolerance(size) : t === "" ? Number.NaN : Number(t);
    if (!(v >= 0 && v <= 64))
      throw new UsageError(
        `--tolerance: "${t}" is not a distance; give pixels from 0 to 64 or "bsds", comma-separated (e.g. --tolerance bsds,1,2)`,
      );
    return v;
  });
}

/** `--control`: an emoji edge ControlNet's edge F1 with its control at scale 1 and without. */
async function evalControl(
  p: Parsed,
  pipe: Awaited<ReturnType<typeof loadPipeline>>,
  opts: ReturnType<typeof samplingDefaults>,
): Promise<void> {
  if (!takesControl(pipe))
    throw new UsageError(
      `--control: ${pipe.dir} is a ${pipe.pipelineClass} without a ControlNet; pass a StableDiffusionControlNetPipeline folder`,
    );
  const size = imageSize(pipe);
  if (size !== 64)
    throw new UsageError(
      `--control measures on held-out emoji (64×64); ${pipe.dir} makes ${size}×${size} images`,
    );
  const n = num(p, "prompts", { min: 1, max: 10000, integer: true }) ?? 200;
  const [tolerance, ...tolerances] = tolerancesFlag(p, size);
  const cannyOpts = pipelineCanny(pipe);
  const minScale = num(p, "relayout", { min: 0.05, max: 1 });
  const set = emojiControlSet(n, {
    size,
    canny: cannyOpts,
    channels: pipe.controlnet!.config.conditioningChannels === 1 ? 1 : 3,
    ...(minScale !== undefined ? { layout: { minScale, seed: opts.seed } } : {}),
  });
  const progress = new Progress("eval");
  const t0 = performance.now();
  const r = await evalControlEdges(pipe, set.edges, set.prompts, {
    ...opts,
    canny: cannyOpts,
    tolerance: tolerance!,
    tolerances,
    ...(str(p, "batch") !== undefined
      ? { batch: num(p, "batch", { min: 1, max: 1024, integer: true })! }
      : {}),
    onProgress: (done, total) =>
      progress.update({ step: done, total, rate: done / ((performance.now() - t0) / 1000) }),
  });
  progress.done();
  const source = `${pipe.dir} (${r.settings})`;
  console.log(bool(p, "json") ? JSON.stringify({ source, ...r }, null, 2) : formatControlReport(r, source));
}
