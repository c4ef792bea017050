/**
 * Bundles a trained MNIST run (or a distilled student: `diffuse distill`) as one of the package's ready
 * models (assets/models/<name>): loads the run's exported EMA model, scores it with `diffuse eval`'s judge (conditional accuracy, confidence,
 * Fréchet distance next to real-vs-real) at DPM-Solver++ 20 steps with guidance, and writes the
 * model in diffusers layout with F16 weights, plus its training config and eval figures in
 * diffuse.json.
 *
 *   node --import tsx scripts/bundle-model.ts runs/mnist [--name mnist] [--per-label 50] [--guidance 2] [--scheduler dpm++2m]
 *   node --import tsx scripts/bundle-model.ts runs/mnist-lcm --name mnist-lcm --scheduler lcm --steps 4 --guidance 1
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { evaluateMnist } from "../src/eval/mnist-eval.ts";
import { replaceDirAtomicAsync } from "../src/io/atomic.ts";
import { generate } from "../src/pipelines/generate.ts";
import { assetsDir, bundledName, loadPipeline, savePipeline } from "../src/pipelines/pipeline-dir.ts";
import { schedulerFor } from "../src/pipelines/scheduler-names.ts";

const [run, ...rest] = process.argv.slice(2);
if (!run) throw new Error("usage: bundle-model.ts <run dir> [--per-label N] [--guidance W] [--steps N]");
const opt = (name: string, dflt: number): number => {
  const i = rest.indexOf(`--${name}`);
  return i >= 0 ? Number(rest[i + 1]) : dflt;
};
const str = (name: string, dflt: string): string => {
  const i = rest.indexOf(`--${name}`);
  return i >= 0 ? String(rest[i + 1]) : dflt;
};
const perLabel = opt("per-label", 50);
const name = str("name", "mnist");
const schedulerName = str("scheduler", "dpm++2m");
const guidance = opt("guidance", 3);
const steps = opt("steps", 20);

const pipe = await loadPipeline(run);
const numClasses = pipe.info.numClasses ?? 10;
const labels = Array.from({ length: perLabel * numClasses }, (_, i) => i % numClasses);
const t0 = performance.now();
const scheduler = schedulerFor({ name: schedulerName }, pipe.schedulerConfig);
const images = await generate(pipe.denoiser, scheduler, {
  labels,
  numClasses,
  steps,
  guidance,
  seed: 0,
});
const sampleSeconds = (performance.now() - t0) / 1000;
const r = await evaluateMnist(images, labels);
const evalFigures = {
  sampler: `${String(scheduler.config.className)} (${schedulerName}), ${steps} steps`,
  guidance,
  samples: labels.length,
  accuracy: r.accuracy,
  meanConfidence: r.meanConfidence,
  frechet: r.frechet,
  frechetRealVsReal: r.frechetRealVsReal,
  frechetRatio: r.frechetRatio,
  perClassAccuracy: r.perClassAccuracy,
  sampleSeconds,
  date: new Date().toISOString(),
};
console.log(JSON.stringify(evalFigures, null, 2));
const training = JSON.parse(readFileSync(join(run, "config.json"), "utf8")) as Record<string, unknown>;
const dest = join(assetsDir(), "models", name);
// a distilled student names its teacher as a bundled name when the teacher is one (not this machine's path)
const from = pipe.info.distilledFrom as { teacher?: string } | undefined;
const distilledFrom =
  from && typeof from.teacher === "string" ? { ...from, teacher: bundledName(from.teacher) } : from;
await replaceDirAtomicAsync(dest, async (tmp) => {
  await savePipeline(
    tmp,
    pipe.denoiser,
    pipe.schedulerConfig,
    {
      ...pipe.info,
      numClasses,
      sampling: { scheduler: schedulerName, steps, guidance },
      trainedWith: pipe.info.trainedWith ?? "diffuse train",
      ...(distilledFrom ? { distilledFrom } : {}),
      training,
      eval: evalFigures,
    },
    "F16",
  );
});
console.log(`bundled → ${dest}`);
