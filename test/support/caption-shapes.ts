/**
 * A caption folder of coloured squares for the text-to-image distillation tests: 12 images of 16×16,
 * two per caption of the tiny tokenizer (test/support/tiny-sd.ts), squares at three offsets, and
 * metadata.jsonl.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { writePng } from "../../src/io/png.ts";
import { TINY_SD_CAPTIONS } from "./tiny-sd.ts";

const COLORS = [
  [220, 30, 30],
  [30, 30, 220],
  [30, 200, 30],
  [230, 220, 30],
  [200, 40, 40],
  [40, 40, 200],
];

/** Writes the folder at `dir` (created) and returns it. */
export function makeCaptionShapes(dir: string): string {
  mkdirSync(dir, { recursive: true });
  const meta: string[] = [];
  for (let k = 0; k < 12; k++) {
    const c = k % 6;
    const px = new Uint8Array(16 * 16 * 3).fill(c >= 2 && c <= 3 ? 0 : 255);
    const lo = 2 + (k % 3) * 2;
    for (let y = lo; y < lo + 8; y++) for (let x = lo; x < lo + 8; x++) px.set(COLORS[c]!, (y * 16 + x) * 3);
    const file = `img-${k}.png`;
    writePng(join(dir, file), { width: 16, height: 16, channels: 3, data: px });
    meta.push(JSON.stringify({ file_name: file, text: TINY_SD_CAPTIONS[c] }));
  }
  writeFileSync(join(dir, "metadata.jsonl"), `${meta.join("\n")}\n`);
  return dir;
}
