/**
 * A small RGB raster for the benchmarks' plots: blended pixels, boxes, lines, and captions in a 5×7
 * bitmap font (upper-case letters, digits, space and + - . = : / ( ) % , @).
 */
import type { Raster } from "../src/io/raster.ts";

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
  "%": "18190204081303",
  "@": "0e11171517100f",
  ",": "000000000c0408",
};

export class Canvas {
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

  /** A line from (x0, y0) to (x1, y1), `width` pixels thick. */
  line(
    x0: number,
    y0: number,
    x1: number,
    y1: number,
    rgb: readonly [number, number, number],
    width = 2,
  ): void {
    const n = Math.max(1, Math.ceil(Math.hypot(x1 - x0, y1 - y0)));
    for (let i = 0; i <= n; i++) {
      const x = Math.round(x0 + ((x1 - x0) * i) / n);
      const y = Math.round(y0 + ((y1 - y0) * i) / n);
      for (let dy = 0; dy < width; dy++)
        for (let dx = 0; dx < width; dx++) this.blend(x + dx, y + dy, rgb, 1);
    }
  }

  /** A filled square of side `side` centred on (x, y). */
  dot(x: number, y: number, rgb: readonly [number, number, number], side = 6): void {
    const h = Math.floor(side / 2);
    for (let dy = -h; dy < side - h; dy++)
      for (let dx = -h; dx < side - h; dx++) this.blend(x + dx, y + dy, rgb, 1);
  }

  raster(): Raster {
    return { width: this.width, height: this.height, channels: 3, data: this.data };
  }
}
