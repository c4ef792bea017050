/**
 * Scatter plots for the toy 2-D benchmark, drawn straight into an RGB raster: one panel per point set
 * (a box, faint axes through the origin, translucent dots, a two-line caption in a 5×7 bitmap font),
 * panels side by side in one image.
 */
import type { Raster } from "../src/io/raster.ts";

export interface Panel {
  /** Caption lines (upper-cased; letters, digits, space and + - . = ( ) : /). */
  title: readonly string[];
  /** Points [n, 2], row-major. */
  points: Float32Array;
}

export interface ScatterOptions {
  /** Side of each square plot area in pixels (default 256). */
  size?: number;
  /** The plotted square [−extent, extent]² (default 3). */
  extent?: number;
  /** Dot colour (default a dark blue). */
  color?: readonly [number, number, number];
  /** Opacity of one dot (default 0.35). */
  alpha?: number;
}

// 5×7 glyphs: seven rows, two hex digits each, bit 4 the leftmost pixel.
const GLYPHS: Readonly<Record<string, string>> = {
  A: "0e11111f111111",
  B: "1e11111e11111e",
  C: "0e11101010110e",
  D: "1e11111111111e",
  E: "1f10101e10101f",
  F: "1f10101e101010",
  G: "0e11101711110f",
  H: "1111111f111111",
  I: "0e04040404040e",
  J: "0702020202120c",
  K: "11121418141211",
  L: "1010101010101f",
  M: "111b1515111111",
  N: "11111915131111",
  O: "0e11111111110e",
  P: "1e11111e101010",
  Q: "0e11111115120d",
  R: "1e11111e141211",
  S: "0f10100e01011e",
  T: "1f040404040404",
  U: "1111111111110e",
  V: "11111111110a04",
  W: "1111111515150a",
  X: "11110a040a1111",
  Y: "1111110a040404",
  Z: "1f01020408101f",
  "0": "0e11131519110e",
  "1": "040c040404040e",
  "2": "0e11010204081f",
  "3": "1f02040201110e",
  "4": "02060a121f0202",
  "5": "1f101e0101110e",
  "6": "0608101e11110e",
  "7": "1f010204080808",
  "8": "0e11110e11110e",
  "9": "0e11110f01020c",
  "+": "0004041f040400",
  "-": "0000001f000000",
  ".": "00000000000c0c",
  "=": "00001f001f0000",
  ":": "000c0c000c0c00",
  "/": "01010204081010",
  "(": "02040808080402",
  ")": "08040202020408",
  " ": "00000000000000",
};

class Canvas {
  readonly data: Uint8Array;
  constructor(
    readonly width: number,
    readonly height: number,
  ) {
    this.data = new Uint8Array(width * height * 3).fill(255);
  }

  /** Blends `rgb` over pixel (x, y) with opacity `a`. */
  blend(x: number, y: number, rgb: readonly [number, number, number], a: number): void {
    if (x < 0 || y < 0 || x >= this.width || y >= this.height) return;
    const p = (y * this.width + x) * 3;
    for (let c = 0; c < 3; c++) this.data[p + c] = Math.round(this.data[p + c]! * (1 - a) + rgb[c]! * a);
  }

  rect(x0: number, y0: number, w: number, h: number, rgb: readonly [number, number, number]): void {
    for (let x = x0; x < x0 + w; x++) {
      this.blend(x, y0, rgb, 1);
      this.blend(x, y0 + h - 1, rgb, 1);
    }
    for (let y = y0; y < y0 + h; y++) {
      this.blend(x0, y, rgb, 1);
      this.blend(x0 + w - 1, y, rgb, 1);
    }
  }

  /** Text at (x, y) (top-left), each font pixel drawn as a `scale`×`scale` block. */
  text(s: string, x: number, y: number, scale: number): void {
    let cx = x;
    for (const ch of s.toUpperCase()) {
      const g = GLYPHS[ch] ?? GLYPHS[" "]!;
      for (let row = 0; row < 7; row++) {
        const bits = Number.parseInt(g.slice(2 * row, 2 * row + 2), 16);
        for (let col = 0; col < 5; col++) {
          if (!(bits & (1 << (4 - col)))) continue;
          for (let dy = 0; dy < scale; dy++) {
            for (let dx = 0; dx < scale; dx++)
              this.blend(cx + col * scale + dx, y + row * scale + dy, [0, 0, 0], 1);
          }
        }
      }
      cx += 6 * scale;
    }
  }
}

/** The panels side by side, captions above their plots. */
export function scatterPanels(panels: readonly Panel[], opts: ScatterOptions = {}): Raster {
  const size = opts.size ?? 256;
  const extent = opts.extent ?? 3;
  const color = opts.color ?? [20, 50, 140];
  const alpha = opts.alpha ?? 0.35;
  const scale = 2;
  const lines = Math.max(1, ...panels.map((p) => p.title.length));
  const captionH = lines * 9 * scale + 6;
  const pad = 8;
  const canvas = new Canvas(panels.length * (size + pad) + pad, captionH + size + pad);
  panels.forEach((panel, k) => {
    const x0 = pad + k * (size + pad);
    const y0 = captionH;
    panel.title.forEach((line, i) => {
      canvas.text(line, x0 + 2, 4 + i * 9 * scale, scale);
    });
    const px = (v: number): number => Math.floor(((v + extent) / (2 * extent)) * size);
    const mid = px(0);
    for (let i = 1; i < size - 1; i++) {
      canvas.blend(x0 + i, y0 + mid, [0, 0, 0], 0.12);
      canvas.blend(x0 + mid, y0 + i, [0, 0, 0], 0.12);
    }
    canvas.rect(x0, y0, size, size, [90, 90, 90]);
    const pts = panel.points;
    for (let i = 0; i + 1 < pts.length; i += 2) {
      const x = px(pts[i]!);
      const y = size - 1 - px(pts[i + 1]!); // y up
      if (x < 1 || y < 1 || x >= size - 2 || y >= size - 2) continue;
      for (let dy = 0; dy < 2; dy++) {
        for (let dx = 0; dx < 2; dx++) canvas.blend(x0 + x + dx, y0 + y + dy, color, alpha);
      }
    }
  });
  return { width: canvas.width, height: canvas.height, channels: 3, data: canvas.data };
}
