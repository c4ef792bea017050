// tensor/graph-cost.ts: the peak of the values alive at once (reshapes are views), the constants'
// bytes and the multiply-accumulates of a traced graph, checked on graphs small enough to count by hand.
import assert from "node:assert/strict";
import { test } from "node:test";
import { graphCost } from "../../src/tensor/graph-cost.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import { conv2dRaw } from "../../src/tensor/ops.ts";
import { Graph } from "../../src/tensor/symbolic.ts";

test("a chain: the peak holds a value and its successor; a reshape allocates nothing", () => {
  const g = new Graph();
  const x = g.input("x", [2, 3]); // 24 B, alive throughout
  const w = g.constant(HostTensor.zeros([3, 4])); // 48 B of constants
  const y = x.matmul(w); // [2, 4]: 32 B; 8 outputs × 3 MACs
  const z = y.add(1); // 32 B while y is alive: 24 + 32 + 32 = 88 B, the peak; y freed
  const r = z.reshape([8]); // a view of z
  const s = r.sum(); // 4 B; z freed after it
  const c = graphCost(g, [s]);
  assert.deepEqual(c, { peakBytes: 88, inputBytes: 24, constantBytes: 48 + 4, macs: 24 });
});

test("convolutions count cin/group × kh × kw MACs per output", () => {
  const g = new Graph();
  const x = g.input("x", [1, 2, 5, 5]);
  const w = g.constant(HostTensor.zeros([4, 2, 3, 3]));
  const y = conv2dRaw(x, w, { strides: [1, 1], pads: [1, 1, 1, 1], dilations: [1, 1], group: 1 });
  assert.deepEqual(y.shape, [1, 4, 5, 5]);
  const c = graphCost(g, [y]);
  assert.equal(c.macs, 100 * 2 * 9);
  assert.equal(c.peakBytes, (50 + 100) * 4);
});
