/**
 * Image grids: a batch of float images [N, C, H, W] laid out as one 8-bit picture, as
 * torchvision's `make_grid` + `save_image` do: `nrow` images per row, `padding` pixels between and
 * around them, values mapped from `range` to 0–255 (round half up, clamped).
 */

import { formatShape } from "../tensor/host.ts";
import type { Raster } from "./raster.ts";

export interface GridOptions {
  /** Images per row (default 8; fewer when the batch is smaller). */
  readonly nrow?: number;
  /** Pixels between and around the images (default 2). */
  readonly padding?: number;
  /** Value of the padding, in the same units as the images (default: the low end of `range`). */
  readonly padValue?: number;
  /** The value range that maps to 0–255: [0, 1] (default) or e.g. [-1, 1]. */
  readonly range?: readonly [number, number];
}

/** Images [N, C, H, W] (or one image [C, H, W]) with C = 1, 3 or 4 → a grey, RGB or RGBA grid. */
export function makeGrid(
  images: { readonly data: Float32Array; readonly shape: readonly number[] },
  options: GridOptions = {},
): Raster {
  const shape = images.shape.length === 3 ? [1, ...images.shape] : images.shape;
  const [n, c, h, w] = shape as [number, number, number, number];
  if (shape.length !== 4 || ![1, 3, 4].includes(c) || n < 1 || h < 1 || w < 1) {
    throw new Error(
      `makeGrid needs images [N, C, H, W] with C = 1, 3 or 4 and N ≥ 1, got ${formatShape(images.shape)}`,
    );
  }
  if (images.data.length !== n * c * h * w) {
    throw new Error(
      `makeGrid: shape ${formatShape(shape)} needs ${n * c * h * w} values, got ${images.data.length}`,
    );
  }
  const [lo, hi] = options.range ?? [0, 1];
  if (!(hi > lo)) throw new Error(`makeGrid range must have low < high, got [${lo}, ${hi}]`);
  const pad = options.padding ?? 2;
  if (!Number.isInteger(pad) || pad < 0)
    throw new Error(`padding must be a non-negative integer, got ${pad}`);
  const nrow = options.nrow ?? 8;
  if (!Number.isInteger(nrow) || nrow < 1) throw new Error(`nrow must be a positive integer, got ${nrow}`);
  const cols = Math.min(nrow, n);
  const rows = Math.ceil(n / cols);
  const width = cols * (w + pad) + pad;
  const height = rows * (h + pad) + pad;
  const toByte = (v: number) => Math.min(255, Math.max(0, Math.floor(((v - lo) / (hi - lo)) * 255 + 0.5)));
  const data = new Uint8Array(width * height * c).fill(toByte(options.padValue ?? lo));
  const src = images.data;
  for (let k = 0; k < n; k++) {
    const x0 = (k % cols) * (w + pad) + pad;
    const y0 = Math.floor(k / cols) * (h + pad) + pad;
    for (let ch = 0; ch < c; ch++) {
      const plane = (k * c + ch) * h * w;
      for (let y = 0; y < h; y++) {
        let o = ((y0 + y) * width + x0) * c + ch;
        const row = plane + y * w;
        for (let x = 0; x < w; x++, o += c) data[o] = toByte(src[row + x]!);
      }
    }
  }
  return { width, height, channels: c as 1 | 3 | 4, data };
}

/** One grid per step of a trajectory (e.g. x_t at each sampler step), as frames for `encodeApng`. */
export function gridFrames(
  steps: readonly { readonly data: Float32Array; readonly shape: readonly number[] }[],
  options: GridOptions = {},
): Raster[] {
  return steps.map((s) => makeGrid(s, options));
}
