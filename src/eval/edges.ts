/**
 * Edge agreement between binary edge maps, with a distance tolerance (the boundary measure of the
 * Berkeley segmentation benchmark, Martin, Fowlkes & Malik 2004, simplified: a pixel counts as
 * matched when the other map has an edge within `tolerance` pixels, Euclidean, without their
 * one-to-one assignment):
 *
 *   precision = |predicted edge pixels near a target edge| / |predicted edge pixels|
 *   recall    = |target edge pixels near a predicted edge| / |target edge pixels|
 *   F1        = 2 · precision · recall / (precision + recall)
 *
 * Two empty maps agree (1); an empty map against a non-empty one scores 0. Over a batch the scores
 * are the means of the per-image scores. This is how a ControlNet's edge control is measured: the
 * edges of a generated image (data/edges.ts) against the control edges.
 */
import { formatShape } from "../tensor/host.ts";

export interface EdgeScore {
  readonly precision: number;
  readonly recall: number;
  readonly f1: number;
}

export interface EdgeF1Options {
  /** Distance in pixels within which an edge pixel counts as matched (default 2). */
  readonly tolerance?: number;
}

/** A binary map: values > 0.5 are edges. [H, W], [C, H, W] or [N, C, H, W] with C = 1. */
export type EdgeMapLike = { readonly data: ArrayLike<number>; readonly shape: readonly number[] };

/** The maps' [N, H, W] geometry, checked. */
function geometry(m: EdgeMapLike, what: string): [number, number, number] {
  const s = m.shape;
  const full = s.length === 2 ? [1, 1, ...s] : s.length === 3 ? [1, ...s] : s;
  if (full.length !== 4 || full[1] !== 1) {
    throw new Error(
      `edgeF1: ${what} must be one-channel edge maps [H, W], [1, H, W] or [N, 1, H, W], got ${formatShape(s)} (take one channel of a 3-channel map)`,
    );
  }
  const [n, , h, w] = full as [number, number, number, number];
  if (m.data.length !== n * h * w) {
    throw new Error(`edgeF1: ${what} ${formatShape(s)} needs ${n * h * w} values, got ${m.data.length}`);
  }
  return [n, h, w];
}

/** For each pixel: is there an edge of `map` (offset `at`) within the disk of the given offsets? */
function near(
  map: ArrayLike<number>,
  at: number,
  h: number,
  w: number,
  disk: readonly [number, number][],
): Uint8Array {
  const out = new Uint8Array(h * w);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      if (!(map[at + y * w + x]! > 0.5)) continue;
      for (const [dy, dx] of disk) {
        const yy = y + dy;
        const xx = x + dx;
        if (yy >= 0 && yy < h && xx >= 0 && xx < w) out[yy * w + xx] = 1;
      }
    }
  }
  return out;
}

/** Precision, recall and F1 of one map against another, both h×w at the given offsets. */
function scoreOne(
  pred: ArrayLike<number>,
  target: ArrayLike<number>,
  at: number,
  h: number,
  w: number,
  disk: readonly [number, number][],
): EdgeScore {
  const nearTarget = near(target, at, h, w, disk);
  const nearPred = near(pred, at, h, w, disk);
  let np = 0;
  let nt = 0;
  let mp = 0;
  let mt = 0;
  for (let i = 0; i < h * w; i++) {
    if (pred[at + i]! > 0.5) {
      np++;
      mp += nearTarget[i]!;
    }
    if (target[at + i]! > 0.5) {
      nt++;
      mt += nearPred[i]!;
    }
  }
  if (np === 0 && nt === 0) return { precision: 1, recall: 1, f1: 1 };
  const precision = np > 0 ? mp / np : 0;
  const recall = nt > 0 ? mt / nt : 0;
  const f1 = precision + recall > 0 ? (2 * precision * recall) / (precision + recall) : 0;
  return { precision, recall, f1 };
}

/**
 * Edge agreement of predicted edge maps with target ones: the mean precision, recall and F1 over the
 * batch, and each image's.
 */
export function edgeF1(
  pred: EdgeMapLike,
  target: EdgeMapLike,
  opts: EdgeF1Options = {},
): EdgeScore & { readonly images: EdgeScore[] } {
  const tol = opts.tolerance ?? 2;
  if (!(tol >= 0) || !Number.isFinite(tol))
    throw new Error(`edgeF1: tolerance must be ≥ 0 pixels, got ${tol}`);
  const [n, h, w] = geometry(pred, "pred");
  const g = geometry(target, "target");
  if (g[0] !== n || g[1] !== h || g[2] !== w) {
    throw new Error(
      `edgeF1: pred ${formatShape(pred.shape)} and target ${formatShape(target.shape)} differ in size`,
    );
  }
  const r = Math.floor(tol);
  const disk: [number, number][] = [];
  for (let dy = -r; dy <= r; dy++)
    for (let dx = -r; dx <= r; dx++) if (dy * dy + dx * dx <= tol * tol) disk.push([dy, dx]);
  const images = Array.from({ length: n }, (_, b) => scoreOne(pred.data, target.data, b * h * w, h, w, disk));
  const mean = (k: keyof EdgeScore) => images.reduce((a, s) => a + s[k], 0) / Math.max(1, n);
  return { precision: mean("precision"), recall: mean("recall"), f1: mean("f1"), images };
}
