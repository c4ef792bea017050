/**
 * Canny edges (data/edges.ts) and edge F1 (eval/edges.ts): a drawn square's edges are found on its
 * boundary, one pixel thin, in grey, RGB and batches; hysteresis keeps weak edges joined to strong
 * ones and drops isolated weak ones; F1 is 1 for identical maps, tolerates shifts up to the
 * tolerance and not beyond, and is 0 for disjoint maps.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { canny, hysteresis } from "../../src/data/edges.ts";
import { edgeF1 } from "../../src/eval/edges.ts";
import { HostTensor } from "../../src/tensor/host.ts";

const S = 32;

/** An S×S grey plane, `f(y, x)` at each pixel. */
const plane = (f: (y: number, x: number) => number) =>
  Float32Array.from({ length: S * S }, (_, i) => f(Math.floor(i / S), i % S));

/** A filled square: rows and columns 8..23 at `v`, 0 around it. */
const square = (v = 1) => plane((y, x) => (y >= 8 && y <= 23 && x >= 8 && x <= 23 ? v : 0));

/** Distance (Chebyshev) from pixel (y, x) to the square's outline between pixels 7|8 and 23|24. */
function offOutline(y: number, x: number): number {
  const inside = (v: number) => v >= 8 && v <= 23;
  const dx = Math.min(Math.abs(x - 7.5), Math.abs(x - 23.5));
  const dy = Math.min(Math.abs(y - 7.5), Math.abs(y - 23.5));
  if (inside(y) && inside(x)) return Math.min(dx, dy);
  if (inside(y)) return dx;
  if (inside(x)) return dy;
  return Math.max(dx, dy);
}

const edgesOf = (data: Float32Array) => canny(new HostTensor(data, [1, S, S])).data;

test("canny: a drawn square's edges lie on its outline, one pixel thin, on every side", () => {
  const e = edgesOf(square());
  let count = 0;
  for (let y = 0; y < S; y++) {
    for (let x = 0; x < S; x++) {
      if (e[y * S + x] !== 1) continue;
      count++;
      assert.ok(offOutline(y, x) <= 0.5, `edge at (${y}, ${x}) is off the outline`);
    }
  }
  // each side: along rows/columns 10..21 exactly one edge pixel crosses the outline
  for (let k = 10; k <= 21; k++) {
    const left = [7, 8].filter((x) => e[k * S + x] === 1).length;
    const right = [23, 24].filter((x) => e[k * S + x] === 1).length;
    const top = [7, 8].filter((y) => e[y * S + k] === 1).length;
    const bottom = [23, 24].filter((y) => e[y * S + k] === 1).length;
    assert.deepEqual([left, right, top, bottom], [1, 1, 1, 1], `row/column ${k}`);
  }
  assert.ok(count >= 4 * 12 && count <= 4 * 18, `${count} edge pixels for a 16-pixel square`);
  assert.ok(e.every((v) => v === 0 || v === 1));
});

test("canny: RGB equals its grey luma, batches and 3-channel maps; bad input is refused", () => {
  const grey = square(0.8);
  const rgb = new Float32Array(3 * S * S);
  rgb.set(grey, 0);
  rgb.set(grey, S * S);
  rgb.set(grey, 2 * S * S);
  const fromRgb = canny(new HostTensor(rgb, [3, S, S]));
  assert.deepEqual(fromRgb.shape, [1, S, S]);
  assert.deepEqual(fromRgb.data, canny(new HostTensor(grey, [1, S, S])).data);

  const batch = new Float32Array(2 * S * S);
  batch.set(square(), 0); // the second image is blank
  const both = canny(new HostTensor(batch, [2, 1, S, S]), { channels: 3 });
  assert.deepEqual(both.shape, [2, 3, S, S]);
  const one = edgesOf(square());
  for (let k = 0; k < 3; k++) assert.deepEqual(both.data.subarray(k * S * S, (k + 1) * S * S), one);
  assert.ok(
    both.data.subarray(3 * S * S).every((v) => v === 0),
    "a blank image has no edges",
  );

  assert.throws(
    () => canny(new HostTensor(new Float32Array(2 * S * S), [2, S, S])),
    /1 \(grey\) or 3 \(RGB\) channels, got 2/,
  );
  assert.throws(
    () => canny(new HostTensor(grey, [S, S])),
    /must be \[C, H, W\] or \[N, C, H, W\], got \[32, 32\]/,
  );
  assert.throws(() => canny(new HostTensor(grey, [1, S, S]), { low: 0.2, high: 0.1 }), /0 < low ≤ high/);
});

test("hysteresis: weak pixels joined to a strong one are kept, isolated weak ones dropped", () => {
  // a 5×8 magnitude plane: row 1 a strong pixel then a weak chain; row 3 a weak chain alone
  const w = 8;
  const mag = new Float32Array(5 * w);
  mag[1 * w + 1] = 0.5;
  for (let x = 2; x <= 6; x++) mag[1 * w + x] = 0.07;
  mag[2 * w + 6] = 0.07; // diagonal and vertical steps connect too
  for (let x = 1; x <= 5; x++) mag[4 * w + x] = 0.07;
  const out = hysteresis(mag, 5, w, 0.05, 0.1);
  for (let x = 1; x <= 6; x++) assert.equal(out[1 * w + x], 1, `chain pixel ${x}`);
  assert.equal(out[2 * w + 6], 1);
  for (let x = 1; x <= 5; x++) assert.equal(out[4 * w + x], 0, `isolated weak pixel ${x}`);
  assert.equal(
    out.reduce((a, b) => a + b, 0),
    7,
  );
});

test("canny: a faint edge continuing a strong one is kept, the same faint edge alone is dropped", () => {
  // a vertical step at x = 16 whose contrast fades from 1 (row 0) to 0.2 (row 31); |∇| ≈ 0.31 · contrast,
  // so with high 0.2 the rows below 15 (contrast < 0.64) are weak, down to 0.062 ≥ low 0.05
  const opts = { low: 0.05, high: 0.2 };
  const fade = plane((y, x) => (x >= 16 ? 1 - (0.8 * y) / 31 : 0));
  const joined = canny(new HostTensor(fade, [1, S, S]), opts).data;
  for (let y = 0; y < S; y++) {
    assert.equal(joined[y * S + 15]! + joined[y * S + 16]!, 1, `row ${y}: one edge pixel on the step`);
  }
  assert.equal(
    joined.reduce((a, b) => a + b, 0),
    S,
    "nothing else",
  );
  const alone = canny(
    new HostTensor(
      plane((_y, x) => (x >= 16 ? 0.2 : 0)),
      [1, S, S],
    ),
    opts,
  ).data;
  assert.ok(
    alone.every((v) => v === 0),
    "a faint edge touching no strong one is dropped",
  );
  const lowered = canny(
    new HostTensor(
      plane((_y, x) => (x >= 16 ? 0.2 : 0)),
      [1, S, S],
    ),
    { low: 0.05, high: 0.06 },
  );
  assert.equal(
    lowered.data.reduce((a, b) => a + b, 0),
    S,
    "the same edge is found once it counts as strong",
  );
});

test("edgeF1: 1 for identical maps, shifts within the tolerance, 0 beyond it and for disjoint maps", () => {
  const map = (f: (y: number, x: number) => boolean) => ({
    data: plane((y, x) => (f(y, x) ? 1 : 0)),
    shape: [1, 1, S, S],
  });
  const line = (x0: number) => map((y, x) => x === x0 && y >= 4 && y < 28);
  const edges = { data: edgesOf(square()), shape: [1, S, S] };
  assert.deepEqual(edgeF1(edges, edges), {
    precision: 1,
    recall: 1,
    f1: 1,
    images: [{ precision: 1, recall: 1, f1: 1 }],
  });
  assert.equal(edgeF1(line(10), line(12)).f1, 1, "a 2-pixel shift is within the default tolerance");
  assert.equal(edgeF1(line(10), line(13)).f1, 0, "a 3-pixel shift is not");
  assert.equal(edgeF1(line(10), line(11), { tolerance: 0 }).f1, 0);
  assert.equal(edgeF1(line(10), line(11), { tolerance: 1 }).f1, 1);
  // Euclidean tolerance: a diagonal shift of (2, 2) is 2.8 pixels away
  const dot = (y0: number, x0: number) => map((y, x) => y === y0 && x === x0);
  assert.equal(edgeF1(dot(10, 10), dot(12, 12)).f1, 0);
  assert.equal(edgeF1(dot(10, 10), dot(11, 11)).f1, 1);
  // spurious predicted edges lower precision only
  const extra = map((y, x) => (x === 10 && y >= 4 && y < 28) || (x === 25 && y >= 4 && y < 28));
  const s = edgeF1(extra, line(10));
  assert.deepEqual([s.precision, s.recall], [0.5, 1]);
  assert.ok(Math.abs(s.f1 - 2 / 3) < 1e-12);
  // disjoint, one empty, both empty
  assert.equal(edgeF1(line(4), line(28)).f1, 0);
  const empty = map(() => false);
  assert.equal(edgeF1(empty, line(4)).f1, 0);
  assert.equal(edgeF1(line(4), empty).f1, 0);
  assert.equal(edgeF1(empty, empty).f1, 1);
  // batches average per image; sizes must agree
  const two = { data: new Float32Array([...line(10).data, ...line(4).data]), shape: [2, 1, S, S] };
  const ref = { data: new Float32Array([...line(10).data, ...line(28).data]), shape: [2, 1, S, S] };
  assert.equal(edgeF1(two, ref).f1, 0.5);
  assert.throws(() => edgeF1(two, line(10)), /differ in size/);
  assert.throws(
    () => edgeF1({ data: new Float32Array(3 * S * S), shape: [3, S, S] }, line(10)),
    /one-channel edge maps/,
  );
});
