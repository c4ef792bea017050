/**
 * Animated PNG (APNG 1.0, Mozilla; now part of the PNG 3rd edition) for denoising trajectories.
 *
 * APNG keeps every frame lossless (a GIF would quantize to 256 colours). Layout: IHDR, acTL (frame
 * count, loop count), text chunks, then per frame an fcTL (size, offset, delay) followed by its
 * pixels: IDAT for the first frame (so viewers without APNG support show it as a still), fdAT for
 * the rest. fcTL and fdAT share one sequence counter. Every frame covers the whole canvas and
 * replaces it (dispose NONE, blend SOURCE).
 */

import { writeFileAtomic } from "./atomic.ts";
import {
  compressPixels,
  concatBytes,
  ihdrChunk,
  PNG_SIGNATURE,
  type PngOptions,
  pngChunk,
  textChunk,
} from "./png.ts";
import { checkRaster, type Raster } from "./raster.ts";

export interface ApngOptions extends PngOptions {
  /** Display time of each frame in milliseconds (one number for all, or one per frame). Default 100. */
  readonly delayMs?: number | readonly number[];
  /** How many times to play (0 = forever, the default). */
  readonly loops?: number;
}

function u32(...values: number[]): Uint8Array {
  const out = new Uint8Array(values.length * 4);
  const v = new DataView(out.buffer);
  for (let i = 0; i < values.length; i++) v.setUint32(i * 4, values[i]!);
  return out;
}

function fctl(seq: number, r: Raster, delayMs: number): Uint8Array {
  if (!Number.isInteger(delayMs) || delayMs < 0 || delayMs > 65535) {
    throw new Error(`APNG frame delay must be an integer number of ms in 0..65535, got ${delayMs}`);
  }
  const d = new Uint8Array(26);
  const v = new DataView(d.buffer);
  v.setUint32(0, seq);
  v.setUint32(4, r.width);
  v.setUint32(8, r.height);
  // x_offset, y_offset = 0
  v.setUint16(20, delayMs); // delay numerator
  v.setUint16(22, 1000); // delay denominator: milliseconds
  d[24] = 0; // dispose_op NONE
  d[25] = 0; // blend_op SOURCE
  return pngChunk("fcTL", d);
}

/** Encodes frames of equal size and channel count as an animated PNG. */
export function encodeApng(frames: readonly Raster[], options: ApngOptions = {}): Uint8Array {
  const first = frames[0];
  if (first === undefined) throw new Error("an animation needs at least one frame");
  frames.forEach((f, i) => {
    checkRaster(f, `frame ${i}`);
    if (f.width !== first.width || f.height !== first.height || f.channels !== first.channels) {
      throw new Error(
        `frame ${i} is ${f.width}×${f.height}×${f.channels} but frame 0 is ${first.width}×${first.height}×${first.channels}; all frames must match`,
      );
    }
  });
  const delays = options.delayMs ?? 100;
  if (typeof delays !== "number" && delays.length !== frames.length) {
    throw new Error(`delayMs has ${delays.length} entries for ${frames.length} frames`);
  }
  const loops = options.loops ?? 0;
  const parts = [PNG_SIGNATURE, ihdrChunk(first), pngChunk("acTL", u32(frames.length, loops))];
  for (const [k, v] of Object.entries(options.text ?? {})) parts.push(textChunk(k, v));
  let seq = 0;
  frames.forEach((f, i) => {
    const delay = typeof delays === "number" ? delays : delays[i]!;
    parts.push(fctl(seq++, f, delay));
    const pixels = compressPixels(f, options.level);
    if (i === 0) parts.push(pngChunk("IDAT", pixels));
    else parts.push(pngChunk("fdAT", concatBytes([u32(seq++), pixels])));
  });
  parts.push(pngChunk("IEND", new Uint8Array(0)));
  return concatBytes(parts);
}

/** Encodes and writes an animated PNG file, atomically. */
export function writeApng(path: string, frames: readonly Raster[], options: ApngOptions = {}): void {
  writeFileAtomic(path, encodeApng(frames, options));
}
