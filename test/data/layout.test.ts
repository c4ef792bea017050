/**
 * Re-laying out images on white (data/layout.ts): what moves, where it goes, what it keeps, and that
 * the held-out control set re-laid out is the same emoji with their outlines elsewhere.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { relayout } from "../../src/data/layout.ts";
import { emojiControlSet } from "../../src/eval/control-edges.ts";
import { Rng } from "../../src/tensor/rng.ts";

const S = 32;
const PLANE = S * S;

/** `n` white RGB images, each with a dark 24×24 square (value 0.25) filling the middle. */
function squares(n: number): Float32Array {
  const out = new Float32Array(n * 3 * PLANE).fill(1);
  for (let i = 0; i < n; i++)
    for (let c = 0; c < 3; c++)
      for (let y = 4; y < 28; y++) for (let x = 4; x < 28; x++) out[(i * 3 + c) * PLANE + y * S + x] = 0.25;
  return out;
}

/** The dark mass Σ(1 − v) of image i's first channel and the bounding box of its non-white pixels. */
function ink(images: Float32Array, i: number) {
  let mass = 0;
  let [x0, y0, x1, y1] = [S, S, -1, -1];
  for (let y = 0; y < S; y++)
    for (let x = 0; x < S; x++) {
      const v = images[i * 3 * PLANE + y * S + x]!;
      mass += 1 - v;
      if (v < 0.999) [x0, y0, x1, y1] = [Math.min(x0, x), Math.min(y0, y), Math.max(x1, x), Math.max(y1, y)];
    }
  return { mass, w: x1 - x0 + 1, h: y1 - y0 + 1, x0, y0 };
}

test("relayout shrinks each image by a factor in [minScale, 1], keeps its ink in proportion, and moves it", () => {
  const n = 40;
  const src = squares(n);
  const out = relayout(src, n, 3, S, new Rng(1), { minScale: 0.5 });
  const before = ink(src, 0);
  const places = new Set<string>();
  let moved = 0;
  for (let i = 0; i < n; i++) {
    const r = ink(out, i);
    const scale = r.w / before.w;
    assert.ok(scale >= 0.5 - 2 / 24 && scale <= 1 + 2 / 24, `image ${i}: scale ${scale}`);
    // the area filter keeps the ink: mass × (side / S)² within a pixel's rounding of the side
    const side = Math.round(S * Math.sqrt(r.mass / before.mass));
    assert.ok(
      Math.abs(r.mass - before.mass * (side / S) ** 2) < before.mass * 0.02,
      `image ${i}: ink ${r.mass}`,
    );
    assert.ok(r.x0 >= 0 && r.y0 >= 0 && r.x0 + r.w <= S && r.y0 + r.h <= S);
    // the three channels move together
    for (let p = 0; p < PLANE; p++) assert.equal(out[(i * 3 + 2) * PLANE + p], out[i * 3 * PLANE + p]);
    if (out.subarray(i * 3 * PLANE, (i + 1) * 3 * PLANE).some((v, k) => v !== src[i * 3 * PLANE + k]))
      moved++;
    places.add(`${r.x0},${r.y0}`);
  }
  assert.ok(moved >= 37, `${moved} of ${n} re-laid out`);
  assert.ok(places.size >= 20, `only ${places.size} distinct places`);
  // deterministic in the rng; the source untouched
  assert.deepEqual(relayout(src, n, 3, S, new Rng(1), { minScale: 0.5 }), out);
  assert.notDeepEqual(relayout(src, n, 3, S, new Rng(2), { minScale: 0.5 }), out);
  assert.deepEqual(src, squares(n));
});

test("relayout with prob 0 or minScale 1 changes nothing; prob draws per image; bad options are refused", () => {
  const n = 200;
  const src = squares(n);
  assert.deepEqual(relayout(src, n, 3, S, new Rng(3), { prob: 0 }), src);
  assert.deepEqual(relayout(src, n, 3, S, new Rng(3), { minScale: 1 }), src);
  const half = relayout(src, n, 3, S, new Rng(3), { prob: 0.5, minScale: 0.5 });
  let kept = 0;
  for (let i = 0; i < n; i++) if (ink(half, i).w === 24) kept++;
  assert.ok(kept > 70 && kept < 130, `${kept} of ${n} kept at prob 0.5`);
  assert.throws(() => relayout(src, n, 3, S, new Rng(0), { prob: 1.5 }), /share.*from 0 to 1.*1\.5/);
  assert.throws(() => relayout(src, n, 3, S, new Rng(0), { minScale: 0 }), /smallest scale.*\(0, 1\]/);
  assert.throws(() => relayout(src, n + 1, 3, S, new Rng(0)), /201 images.*need/);
});

test("the held-out control set re-laid out: the same prompts, edges smaller and elsewhere", () => {
  const plain = emojiControlSet(12);
  const moved = emojiControlSet(12, { layout: { minScale: 0.5, seed: 0 } });
  assert.deepEqual(moved.prompts, plain.prompts);
  assert.deepEqual(emojiControlSet(12, { layout: { minScale: 0.5, seed: 0 } }).edges, moved.edges);
  const count = (d: Float32Array) => d.reduce((a, v) => a + v, 0);
  // edges of shrunk images are shorter: fewer edge pixels over the set
  assert.ok(count(moved.edges.data) < count(plain.edges.data) * 0.9);
});
