/**
 * 8-bit raster images: what the PNG encoder writes, the decoders return, and the grid builds.
 *
 * Pixels are row-major and interleaved (`data[(y * width + x) * channels + c]`), channels 1 (grey),
 * 2 (grey + alpha), 3 (RGB) or 4 (RGBA).
 */

export type Channels = 1 | 2 | 3 | 4;

export interface Raster {
  readonly width: number;
  readonly height: number;
  readonly channels: Channels;
  readonly data: Uint8Array;
}

/** Checks that a raster's fields agree; `what` names it in the error. */
export function checkRaster(r: Raster, what = "image"): void {
  if (!Number.isInteger(r.width) || !Number.isInteger(r.height) || r.width < 1 || r.height < 1) {
    throw new Error(`${what}: width and height must be positive integers, got ${r.width}×${r.height}`);
  }
  if (![1, 2, 3, 4].includes(r.channels)) {
    throw new Error(`${what}: channels must be 1, 2, 3 or 4, got ${r.channels}`);
  }
  const n = r.width * r.height * r.channels;
  if (r.data.length !== n) {
    throw new Error(
      `${what}: ${r.width}×${r.height}×${r.channels} needs ${n} bytes of pixel data, got ${r.data.length}`,
    );
  }
}

/**
 * Converts to grey (1) or RGB (3). RGB → grey uses the ITU-R 601 luma weights (as PIL's "L" mode
 * does); alpha is composited over black by default, so fully transparent pixels become 0, like zero
 * padding, or over white (icons and emoji drawn for a light page).
 */
export function toChannels(r: Raster, channels: 1 | 3, background: "black" | "white" = "black"): Raster {
  if (r.channels === channels) return r;
  const bg = background === "white" ? 255 : 0;
  const n = r.width * r.height;
  const src = r.data;
  const cin = r.channels;
  const out = new Uint8Array(n * channels);
  const hasAlpha = cin === 2 || cin === 4;
  for (let i = 0; i < n; i++) {
    const p = i * cin;
    const a = hasAlpha ? src[p + cin - 1]! / 255 : 1;
    let red: number;
    let green: number;
    let blue: number;
    if (cin >= 3) {
      red = src[p]!;
      green = src[p + 1]!;
      blue = src[p + 2]!;
    } else {
      red = green = blue = src[p]!;
    }
    if (channels === 1) {
      out[i] = Math.round(((red * 299 + green * 587 + blue * 114) / 1000) * a + bg * (1 - a));
    } else {
      out[i * 3] = Math.round(red * a + bg * (1 - a));
      out[i * 3 + 1] = Math.round(green * a + bg * (1 - a));
      out[i * 3 + 2] = Math.round(blue * a + bg * (1 - a));
    }
  }
  return { width: r.width, height: r.height, channels, data: out };
}
