/**
 * New layouts for images on a white background: each image shrunk (area filter) by a random factor
 * and placed at a random position on white. An edge ControlNet trained on images whose outline always
 * sits in the same place (emoji fill their square) can lean on the caption for the outline; shown the
 * same images at other sizes and places — image and edges alike — it has to read the layout from the
 * control image. The evaluation re-lays out held-out images the same way (eval/control-edges.ts).
 */
import type { Raster } from "../io/raster.ts";
import type { Rng } from "../tensor/rng.ts";
import { resizeCrop } from "./resize.ts";

export interface LayoutOptions {
  /** Share of the images re-laid out (each drawn on its own); default 1. */
  readonly prob?: number;
  /** The smallest scale; scales are uniform in [minScale, 1]. Default 0.5. */
  readonly minScale?: number;
}

/** Checks layout options, naming `what` (e.g. the config field's prefix) in the error. */
export function checkLayout(opts: LayoutOptions, what = "layout"): void {
  const { prob = 1, minScale = 0.5 } = opts;
  if (!(prob >= 0 && prob <= 1))
    throw new Error(`${what}: the share of re-laid-out images must be from 0 to 1, got ${prob}`);
  if (!(minScale > 0 && minScale <= 1))
    throw new Error(`${what}: the smallest scale must be in (0, 1], got ${minScale}`);
}

/**
 * Copies of `count` images [count, C, S, S] in [0, 1] (white background = 1), each with probability
 * `prob` shrunk to round(s·S) pixels, s uniform in [minScale, 1], at a uniform position inside the
 * square; the others unchanged. Every draw comes from `rng` (the same rng, the same layouts).
 */
export function relayout(
  images: Float32Array,
  count: number,
  channels: number,
  size: number,
  rng: Rng,
  opts: LayoutOptions = {},
): Float32Array {
  checkLayout(opts);
  const { prob = 1, minScale = 0.5 } = opts;
  const plane = size * size;
  const per = channels * plane;
  if (images.length !== count * per)
    throw new Error(
      `relayout: ${count} images of ${channels}×${size}×${size} need ${count * per} values, got ${images.length}`,
    );
  const out = new Float32Array(images);
  const bytes = new Uint8Array(plane * channels);
  for (let i = 0; i < count; i++) {
    // four draws per image whether or not it moves, so one image's layout never shifts another's
    const [u, su, xu, yu] = [rng.nextUniform(), rng.nextUniform(), rng.nextUniform(), rng.nextUniform()];
    if (u >= prob) continue;
    const side = Math.max(1, Math.round((minScale + (1 - minScale) * su) * size));
    if (side === size) continue;
    const src = images.subarray(i * per, (i + 1) * per);
    for (let p = 0; p < plane; p++)
      for (let c = 0; c < channels; c++)
        bytes[p * channels + c] = Math.round(Math.min(1, Math.max(0, src[c * plane + p]!)) * 255);
    const raster: Raster = { width: size, height: size, channels: channels as 1 | 3, data: bytes };
    const small = resizeCrop(raster, side, side, "area");
    const x0 = Math.floor(xu * (size - side + 1));
    const y0 = Math.floor(yu * (size - side + 1));
    const dst = out.subarray(i * per, (i + 1) * per);
    dst.fill(1);
    for (let c = 0; c < channels; c++)
      for (let y = 0; y < side; y++)
        for (let x = 0; x < side; x++)
          dst[c * plane + (y0 + y) * size + x0 + x] = small[c * side * side + y * side + x]!;
  }
  return out;
}
