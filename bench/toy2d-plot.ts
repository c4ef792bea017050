/**
 * Scatter plots for the toy 2-D benchmark, drawn straight into an RGB raster: one panel per point set
 * (a box, faint axes through the origin, translucent dots, a two-line caption in a 5×7 bitmap font),
 * panels side by side in one image.
 */
import type { Raster } from "../src/io/raster.ts";
import { Canvas } from "./canvas.ts";

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
  return canvas.raster();
}
