/**
 * Scores the samples bench/recipe_sweep.py wrote (uint8 files named in its results.jsonl) with the
 * project's MNIST classifier: accuracy and Fréchet distance (× real-vs-real) per recipe and setting.
 *
 *   node --import tsx bench/recipe-sweep-eval.ts OUT_DIR
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { DigitClassifier } from "../src/eval/classify.ts";
import { evaluateMnist } from "../src/eval/mnist-eval.ts";
import { HostTensor } from "../src/tensor/host.ts";

interface SweepResult {
  name: string;
  error?: string;
  train_s: number;
  losses: number[];
  samples: Record<string, string>;
  recipe: { size: number };
}

const dir = process.argv[2];
if (!dir) throw new Error("usage: node --import tsx bench/recipe-sweep-eval.ts OUT_DIR");
const judge = await DigitClassifier.load();
const lines = readFileSync(join(dir, "results.jsonl"), "utf8").trim().split("\n");
for (const line of lines) {
  const r = JSON.parse(line) as SweepResult;
  if (r.error) {
    console.log(`${r.name}: failed (${r.error})`);
    continue;
  }
  const size = r.recipe.size;
  const figures: string[] = [];
  for (const [setting, file] of Object.entries(r.samples)) {
    const u8 = readFileSync(join(dir, file));
    const n = u8.length / (size * size);
    const images = new HostTensor(
      Float32Array.from(u8, (v) => v / 255),
      [n, 1, size, size],
    );
    const labels = Array.from({ length: n }, (_, i) => Math.floor((i * 10) / n));
    const e = await evaluateMnist(images, labels, { classifier: judge });
    const acc = ((e.accuracy ?? 0) * 100).toFixed(1);
    figures.push(`${setting} ${acc}% ${(e.frechet / e.frechetRealVsReal).toFixed(2)}x`);
  }
  console.log(`${r.name.padEnd(20)} loss ${r.losses.at(-1)?.toFixed(4)} | ${figures.join(" | ")}`);
}
judge.dispose();
