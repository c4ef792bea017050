/**
 * Centre crop and resize of 8-bit rasters into float32 planes [C, H, W] in [0, 1].
 *
 * The crop is the largest centred box with the target's aspect ratio (so a square target keeps the
 * middle square, as torchvision's Resize(size) + CenterCrop(size) do); the box may have fractional
 * edges, which both filters handle exactly. Resampling is separable (rows, then columns):
 * - "area": each output pixel averages the source pixels its footprint covers, weighted by the
 *   overlap (a box filter; PIL's BOX, OpenCV's INTER_AREA). Use it to shrink: no aliasing.
 * - "bilinear": interpolates between the 2×2 nearest source pixel centres (half-pixel centres,
 *   like `align_corners=False`). Smooth when enlarging; aliases when shrinking a lot.
 */

import type { Raster } from "../io/raster.ts";

export type ResampleMethod = "area" | "bilinear";

interface Taps {
  readonly index: Int32Array[];
  readonly weight: Float64Array[];
}

/** For each of `outN` outputs: which of `srcN` inputs contribute, and how much. */
function taps(outN: number, start: number, scale: number, srcN: number, method: ResampleMethod): Taps {
  const index: Int32Array[] = [];
  const weight: Float64Array[] = [];
  for (let o = 0; o < outN; o++) {
    if (method === "bilinear") {
      const u = Math.min(srcN - 1, Math.max(0, start + (o + 0.5) * scale - 0.5));
      const i0 = Math.floor(u);
      const f = u - i0;
      index.push(Int32Array.of(i0, Math.min(i0 + 1, srcN - 1)));
      weight.push(Float64Array.of(1 - f, f));
      continue;
    }
    const a = start + o * scale;
    const b = a + scale;
    const first = Math.max(0, Math.floor(a));
    const last = Math.min(srcN - 1, Math.ceil(b) - 1);
    const idx: number[] = [];
    const w: number[] = [];
    let total = 0;
    for (let i = first; i <= last; i++) {
      const overlap = Math.min(b, i + 1) - Math.max(a, i);
      if (overlap <= 0) continue;
      idx.push(i);
      w.push(overlap);
      total += overlap;
    }
    index.push(Int32Array.from(idx));
    weight.push(Float64Array.from(w, (x) => x / total));
  }
  return { index, weight };
}

/**
 * Centre-crops `src` to the aspect ratio of `height`×`width`, resizes it, and writes the result
 * as planes [C, H, W] scaled to [0, 1] into `out` at `offset` (or a new array).
 */
export function resizeCrop(
  src: Raster,
  height: number,
  width: number,
  method: ResampleMethod = "area",
  out: Float32Array = new Float32Array(src.channels * height * width),
  offset = 0,
): Float32Array {
  const { width: sw, height: sh, channels: c, data } = src;
  const aspect = width / height;
  let cw = sw;
  let ch = sh;
  if (sw / sh > aspect) cw = sh * aspect;
  else ch = sw / aspect;
  const x0 = (sw - cw) / 2;
  const y0 = (sh - ch) / 2;
  const tx = taps(width, x0, cw / width, sw, method);
  const ty = taps(height, y0, ch / height, sh, method);
  // Only the source rows some output row uses are resampled horizontally.
  let rowFirst = sh - 1;
  let rowLast = 0;
  for (const r of ty.index) {
    for (const i of r) {
      rowFirst = Math.min(rowFirst, i);
      rowLast = Math.max(rowLast, i);
    }
  }
  const tmp = new Float64Array((rowLast - rowFirst + 1) * width * c);
  for (let y = rowFirst; y <= rowLast; y++) {
    const rowBase = y * sw * c;
    const tBase = (y - rowFirst) * width * c;
    for (let ox = 0; ox < width; ox++) {
      const idx = tx.index[ox]!;
      const w = tx.weight[ox]!;
      for (let k = 0; k < c; k++) {
        let s = 0;
        for (let j = 0; j < idx.length; j++) s += w[j]! * data[rowBase + idx[j]! * c + k]!;
        tmp[tBase + ox * c + k] = s;
      }
    }
  }
  const plane = height * width;
  for (let oy = 0; oy < height; oy++) {
    const idx = ty.index[oy]!;
    const w = ty.weight[oy]!;
    for (let ox = 0; ox < width; ox++) {
      for (let k = 0; k < c; k++) {
        let s = 0;
        for (let j = 0; j < idx.length; j++) s += w[j]! * tmp[((idx[j]! - rowFirst) * width + ox) * c + k]!;
        out[offset + k * plane + oy * width + ox] = s / 255;
      }
    }
  }
  return out;
}
