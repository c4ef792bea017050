/**
 * `npm run bench -- steps`: what each step buys — for MNIST teachers and their few-step students
 * (consistency distillation: `diffuse distill --method lcm`; reflow: `--method reflow`), the quality
 * `diffuse eval` measures (class-conditional accuracy, Fréchet distance in the judge's feature space
 * and its ratio to real-vs-real) and the wall time per image at 1, 2, 4, 8, 20 and 50 steps.
 *
 * Every model samples with its own recommended scheduler and guidance (its diffuse.json): teachers
 * with classifier-free guidance (two passes a step), students with guidance 1 (one pass; the teacher's
 * guidance is distilled in). Every model and step count sees the same labels and seeds: 100-image
 * chunks, 10 of each digit, chunk k seeded `seed + k`. Times are the generation only (the graphs are
 * compiled by one untimed warm-up), on the threads ONNX Runtime picks: the fastest chunk's time per
 * image, which other processes on a shared machine disturb least.
 *
 * Prints a Markdown table, the speed-ups of the students' few-step generations over their teacher's
 * 50 steps, and writes a PNG plot (accuracy and FD ratio against steps, log scale).
 *
 * Options: --models a,b,… (bundled names or folders, NAME@W for guidance W instead of the recommended one; default the bundled MNIST models: mnist,
 * mnist-lcm, mnist-dit, mnist-reflow where present), --steps 1,2,4,8,20,50, --per-label N (default
 * 100: 1,000 images a point), --seed N (default 1000), --plot FILE (default docs/steps.png),
 * --json FILE (the points), --with FILE (an earlier run's --json, joined to this one's table and plot).
 */
import { readFileSync, writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { DigitClassifier } from "../src/eval/classify.ts";
import { evaluateMnist } from "../src/eval/mnist-eval.ts";
import { writePng } from "../src/io/png.ts";
import { generate } from "../src/pipelines/generate.ts";
import { bundledModels, disposePipeline, loadPipeline } from "../src/pipelines/pipeline-dir.ts";
import { schedulerFor } from "../src/pipelines/scheduler-names.ts";
import { HostTensor } from "../src/tensor/host.ts";
import { Canvas } from "./canvas.ts";
import { LoadMonitor } from "./timing.ts";

export interface StepPoint {
  model: string;
  scheduler: string;
  guidance: number;
  steps: number;
  accuracy: number;
  frechet: number;
  frechetRatio: number;
  msPerImage: number;
  /** The teacher a distilled student names in its diffuse.json (a bundled name or a folder). */
  teacher?: string;
  /** The guidance scale of the teacher the student was distilled from (its diffuse.json). */
  teacherGuidance?: number;
}

const CHUNK = 100;

/** One model at each step count: `perLabel` images of each digit, scored by the MNIST judge. */
async function measureModel(
  name: string,
  stepsList: readonly number[],
  perLabel: number,
  seed: number,
  judge: DigitClassifier,
): Promise<StepPoint[]> {
  // NAME@W: the model at guidance W instead of its recommended one
  const at = name.lastIndexOf("@");
  const pipe = await loadPipeline(at > 0 ? name.slice(0, at) : name);
  try {
    const rec = pipe.info.sampling ?? {};
    const schedName = rec.scheduler ?? "dpm++2m";
    const guidance = at > 0 ? Number(name.slice(at + 1)) : (rec.guidance ?? 1);
    if (!(guidance >= 0)) throw new Error(`--models: "${name}" takes a guidance scale after @, e.g. mnist@2`);
    const numClasses = pipe.info.numClasses ?? 10;
    const distilled = pipe.info.distilledFrom as { teacher?: unknown; guidance?: unknown } | undefined;
    const from = distilled?.teacher;
    const labels = Array.from({ length: perLabel * numClasses }, (_, i) => i % numClasses);
    const scheduler = schedulerFor({ name: schedName }, pipe.schedulerConfig);
    // compile the forward (one graph for every step count) outside the timings
    await generate(pipe.denoiser, scheduler, { labels: labels.slice(0, CHUNK), steps: 1, guidance, seed });
    const out: StepPoint[] = [];
    for (const steps of stepsList) {
      const parts: HostTensor<"float32">[] = [];
      let fastest = Number.POSITIVE_INFINITY;
      for (let lo = 0, k = 0; lo < labels.length; lo += CHUNK, k++) {
        const chunk = labels.slice(lo, lo + CHUNK);
        const t0 = performance.now();
        parts.push(
          await generate(pipe.denoiser, scheduler, { labels: chunk, steps, guidance, seed: seed + k }),
        );
        fastest = Math.min(fastest, performance.now() - t0);
      }
      const per = parts[0]!.size / parts[0]!.shape[0]!;
      const all = new Float32Array(labels.length * per);
      let at = 0;
      for (const p of parts) {
        all.set(p.data, at);
        at += p.size;
      }
      const images = new HostTensor(all, [labels.length, ...parts[0]!.shape.slice(1)]);
      const r = await evaluateMnist(images, labels, { classifier: judge });
      const point: StepPoint = {
        model: name,
        scheduler: schedName,
        guidance,
        steps,
        accuracy: r.accuracy ?? Number.NaN,
        frechet: r.frechet,
        frechetRatio: r.frechetRatio,
        msPerImage: fastest / CHUNK,
        ...(typeof from === "string" ? { teacher: from } : {}),
        ...(typeof distilled?.guidance === "number" ? { teacherGuidance: distilled.guidance } : {}),
      };
      console.log(
        `${name} ${schedName} ${steps} steps (guidance ${guidance}): accuracy ${(100 * point.accuracy).toFixed(1)}%, FD ${point.frechet.toFixed(2)} (${point.frechetRatio.toFixed(2)}× real-vs-real), ${point.msPerImage.toFixed(2)} ms/image`,
      );
      out.push(point);
    }
    return out;
  } finally {
    disposePipeline(pipe);
  }
}

/** The Markdown table: one row per model and step count. */
export function stepsTable(points: readonly StepPoint[]): string {
  const rows = points.map(
    (p) =>
      `| ${p.model} | ${p.scheduler} | ${p.guidance} | ${p.steps} | ${(100 * p.accuracy).toFixed(1)}% | ${p.frechet.toFixed(1)} | ${p.frechetRatio.toFixed(2)} | ${p.msPerImage.toFixed(2)} |`,
  );
  return [
    "| model | scheduler | guidance | steps | accuracy | FD | FD / real-vs-real | ms / image |",
    "|---|---|---|---|---|---|---|---|",
    ...rows,
  ].join("\n");
}

const COLORS: readonly (readonly [number, number, number])[] = [
  [20, 50, 140],
  [200, 60, 30],
  [30, 140, 60],
  [150, 40, 160],
  [200, 150, 0],
  [0, 150, 160],
];

/** Accuracy, FD ratio and time per image against steps (log-x; FD ratio and time log-y), one line per model, a legend below. */
export function stepsPlot(points: readonly StepPoint[]): Canvas {
  const models = [...new Set(points.map((p) => p.model))];
  const steps = points.map((p) => p.steps);
  const W = 360;
  const H = 240;
  const pad = 44;
  const legendH = 22 * models.length + 8;
  const canvas = new Canvas(3 * (W + pad) + pad, 40 + H + 40 + legendH);
  const lx = (s: number, lo: number, hi: number) =>
    hi > lo ? (Math.log(s) - Math.log(lo)) / (Math.log(hi) - Math.log(lo)) : 0.5;
  const sLo = Math.min(...steps);
  const sHi = Math.max(...steps);
  const accLo = Math.min(90, Math.floor(Math.min(...points.map((p) => 100 * p.accuracy)) / 5) * 5);
  const ratioHi = Math.max(2, ...points.map((p) => p.frechetRatio));
  const msLo = 10 ** Math.floor(Math.log10(Math.min(...points.map((p) => p.msPerImage))));
  const msHi = 10 ** Math.ceil(Math.log10(Math.max(...points.map((p) => p.msPerImage))));
  const panels = [
    {
      title: `ACCURACY % (${accLo}-100)`,
      y: (p: StepPoint) => (100 * p.accuracy - accLo) / (100 - accLo),
      ticks: [accLo, (accLo + 100) / 2, 100].map((v) => ({
        v: (v - accLo) / (100 - accLo),
        label: String(v),
      })),
    },
    {
      title: "FD / REAL-VS-REAL (LOG)",
      y: (p: StepPoint) => lx(p.frechetRatio, 1, ratioHi),
      ticks: [1, 2, 5, 10, 20, 50]
        .filter((v) => v <= ratioHi)
        .map((v) => ({ v: lx(v, 1, ratioHi), label: String(v) })),
    },
    {
      title: "MS / IMAGE (LOG)",
      y: (p: StepPoint) => lx(p.msPerImage, msLo, msHi),
      ticks: [0.1, 1, 10, 100, 1000]
        .filter((v) => v >= msLo && v <= msHi)
        .map((v) => ({ v: lx(v, msLo, msHi), label: String(v) })),
    },
  ];
  panels.forEach((panel, k) => {
    const x0 = pad + k * (W + pad);
    const y0 = 40;
    canvas.text(panel.title, x0, 12, 2);
    canvas.rect(x0, y0, W, H, [90, 90, 90]);
    for (const t of panel.ticks) {
      const y = y0 + H - 1 - Math.round(Math.min(1, Math.max(0, t.v)) * (H - 1));
      for (let x = 1; x < W - 1; x++) canvas.blend(x0 + x, y, [0, 0, 0], 0.12);
      canvas.text(t.label, x0 - 6 * t.label.length - 4, y - 3, 1);
    }
    for (const s of [...new Set(steps)]) {
      const x = x0 + Math.round(lx(s, sLo, sHi) * (W - 1));
      for (let y = 1; y < H - 1; y++) canvas.blend(x, y0 + y, [0, 0, 0], 0.08);
      canvas.text(String(s), x - 3 * String(s).length, y0 + H + 6, 1);
    }
    canvas.text("STEPS", x0 + W / 2 - 15, y0 + H + 20, 1);
    models.forEach((m, i) => {
      const color = COLORS[i % COLORS.length]!;
      const xy = points
        .filter((p) => p.model === m)
        .map((p) => [
          x0 + Math.round(lx(p.steps, sLo, sHi) * (W - 1)),
          y0 + H - 1 - Math.round(Math.min(1, Math.max(0, panel.y(p))) * (H - 1)),
        ]);
      for (let j = 1; j < xy.length; j++)
        canvas.line(xy[j - 1]![0]!, xy[j - 1]![1]!, xy[j]![0]!, xy[j]![1]!, color);
      for (const [x, y] of xy) canvas.dot(x!, y!, color);
    });
  });
  models.forEach((m, i) => {
    const y = 40 + H + 40 + 8 + 22 * i;
    canvas.dot(pad + 6, y + 6, COLORS[i % COLORS.length]!, 10);
    const p = points.find((q) => q.model === m)!;
    canvas.text(`${m}: ${p.scheduler}, guidance ${p.guidance}`, pad + 20, y, 2);
  });
  return canvas;
}

export async function main(args: readonly string[]): Promise<void> {
  const { values } = parseArgs({
    args: [...args],
    options: {
      models: { type: "string" },
      steps: { type: "string", default: "1,2,4,8,20,50" },
      "per-label": { type: "string", default: "100" },
      seed: { type: "string", default: "1000" },
      plot: { type: "string", default: "docs/steps.png" },
      json: { type: "string" },
      with: { type: "string" },
    },
  });
  const have = bundledModels();
  const models = values.models
    ? values.models.split(",")
    : ["mnist", "mnist-lcm", "mnist-dit", "mnist-reflow"].filter((m) => have.includes(m));
  const stepsList = values.steps.split(",").map(Number);
  if (stepsList.some((s) => !Number.isInteger(s) || s < 1))
    throw new Error(`--steps takes positive integers separated by commas, got "${values.steps}"`);
  const perLabel = Number(values["per-label"]);
  if (!Number.isInteger(perLabel) || perLabel < 1 || (perLabel * 10) % CHUNK !== 0)
    throw new Error(
      `--per-label takes a multiple of 10 (chunks of ${CHUNK} images), got "${values["per-label"]}"`,
    );
  const seed = Number(values.seed);
  const judge = await DigitClassifier.load();
  const load = new LoadMonitor();
  load.start();
  // --with FILE: the points of an earlier run (its --json) join the table and the plot
  const points: StepPoint[] = values.with
    ? (JSON.parse(readFileSync(values.with, "utf8")) as StepPoint[])
    : [];
  try {
    for (const m of models) points.push(...(await measureModel(m, stepsList, perLabel, seed, judge)));
  } finally {
    judge.dispose();
  }
  const others = load.stop();
  console.log(`\n${stepsTable(points)}\n`);
  console.log(`(other processes used ${others.toFixed(1)} cores on average during the run)`);
  // the students' few-step generations against their teacher's 50 steps
  for (const p of points.filter((q) => q.teacher !== undefined && q.steps <= 4)) {
    // the teacher at the guidance the student learnt, else at any
    const of = points.filter((q) => q.model.replace(/@[^@]*$/, "") === p.teacher && q.steps === 50);
    const teacher = of.find((q) => q.guidance === p.teacherGuidance) ?? of[0];
    if (teacher)
      console.log(
        `${p.model} ${p.steps} steps vs ${teacher.model} 50 steps (guidance ${teacher.guidance}): ${(teacher.msPerImage / p.msPerImage).toFixed(1)}× faster, FD ${(p.frechet / teacher.frechet).toFixed(2)}× the teacher's, accuracy ${(100 * p.accuracy).toFixed(1)}% vs ${(100 * teacher.accuracy).toFixed(1)}%`,
      );
  }
  writePng(values.plot, stepsPlot(points).raster());
  console.log(`plot → ${values.plot}`);
  if (values.json) writeFileSync(values.json, `${JSON.stringify(points, null, 2)}\n`);
}
