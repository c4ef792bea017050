import assert from "node:assert/strict";
import { test } from "node:test";
import { gridFrames, makeGrid } from "../../src/io/grid.ts";
import { HostTensor } from "../../src/tensor/host.ts";

test("makeGrid lays out images row by row with padding (torchvision layout)", () => {
  // 3 grey 2×2 images, each filled with its index / 4; 2 per row, padding 1.
  const data = new Float32Array(3 * 4);
  for (let k = 0; k < 3; k++) data.fill((k + 1) / 4, k * 4, k * 4 + 4);
  const g = makeGrid(HostTensor.from({ data, shape: [3, 1, 2, 2] }), { nrow: 2, padding: 1 });
  assert.equal(g.channels, 1);
  assert.equal(g.width, 2 * 3 + 1);
  assert.equal(g.height, 2 * 3 + 1);
  const rows: number[][] = [];
  for (let y = 0; y < g.height; y++) rows.push(Array.from(g.data.subarray(y * g.width, (y + 1) * g.width)));
  const a = 64; // round(0.25 * 255) = 64 (63.75 + 0.5 floored)
  const b = 128; // 127.5 + 0.5 → 128
  const c = 191; // 191.25 + 0.5 → 191
  assert.deepEqual(rows, [
    [0, 0, 0, 0, 0, 0, 0],
    [0, a, a, 0, b, b, 0],
    [0, a, a, 0, b, b, 0],
    [0, 0, 0, 0, 0, 0, 0],
    [0, c, c, 0, 0, 0, 0],
    [0, c, c, 0, 0, 0, 0],
    [0, 0, 0, 0, 0, 0, 0],
  ]);
});

test("makeGrid: RGB interleaving, [-1, 1] range, clamping, pad value", () => {
  // One 1×1 RGB image (-1, 0, 1) and one out of range (-5, 5, 0.5).
  const data = Float32Array.of(-1, 0, 1, -5, 5, 0.5);
  const g = makeGrid({ data, shape: [2, 3, 1, 1] }, { padding: 1, range: [-1, 1], padValue: 1 });
  assert.equal(g.channels, 3);
  assert.equal(g.width, 5);
  assert.equal(g.height, 3);
  const px = (x: number, y: number) => Array.from(g.data.subarray((y * 5 + x) * 3, (y * 5 + x) * 3 + 3));
  assert.deepEqual(px(0, 0), [255, 255, 255]);
  assert.deepEqual(px(1, 1), [0, 128, 255]);
  assert.deepEqual(px(3, 1), [0, 255, 191]);
  assert.throws(() => makeGrid({ data: new Float32Array(8), shape: [2, 2, 2] }), /C = 1, 3 or 4/);
  assert.throws(() => makeGrid({ data: new Float32Array(3), shape: [1, 1, 2, 2] }), /needs 4 values/);
  assert.equal(gridFrames([{ data, shape: [2, 3, 1, 1] }], { nrow: 1, padding: 0 })[0]!.height, 2);
});
