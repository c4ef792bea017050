/**
 * ONNX emission corner cases: outputs that are inputs or constants, one tensor under two output
 * names, user names that look like internal ones, an output that would shadow an input, and outputs
 * that are reshapes (returned by the session before the reshape).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { emitOnnx, toOnnx } from "../../src/onnx/emit.ts";
import { compileGraph, sessionOutputs } from "../../src/runtime/compile.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import * as o from "../../src/tensor/ops.ts";
import { Graph, type Tensor } from "../../src/tensor/symbolic.ts";

const x = new HostTensor(Float32Array.of(1, 2, 3), [3]);

async function run(
  g: Graph,
  outputs: Record<string, Tensor>,
  feeds: Record<string, HostTensor>,
): Promise<Record<string, number[]>> {
  const c = await compileGraph(g, outputs, { threads: 1 });
  const r = await c.run(feeds);
  return Object.fromEntries(Object.entries(r).map(([k, v]) => [k, v.toArray()]));
}

test("outputs may be graph inputs, constants, or one tensor under two names", async () => {
  const g = new Graph();
  const xi = g.input("x", [3]);
  const e = o.mul(xi, 2);
  const r = await run(g, { same: xi, k: g.scalar(3), a: e, b: e }, { x });
  assert.deepEqual(r, { same: [1, 2, 3], k: [3], a: [2, 4, 6], b: [2, 4, 6] });
});

test("user names that look like internal value names do not collide with them", async () => {
  const g = new Graph();
  const xi = g.input("x", [3]);
  const a = o.add(xi, 1); // tensor id 2 (the scalar 1 is id 1): internally "t2"
  const t2 = g.input("t2", [3]);
  const c = g.input("c_i64_0", [3]);
  const y = o.add(o.mul(o.reshape(o.mul(a, 2), [3, 1]), o.reshape(t2, [1, 3])), o.reshape(c, [3, 1]));
  const rows = g.constant(HostTensor.int64([1]));
  const outputs = { t1: o.sum(y, 1), zeros_0: o.scatterAdd(rows, o.reshape(xi, [1, 3]), [2, 3]) };
  const r = await run(g, outputs, { x, t2: x, c_i64_0: x });
  // a = x + 1 = [2, 3, 4]; y[i, j] = 2a[i]·x[j] + x[i]; Σⱼ y[i, j] = 12a[i] + 3x[i]
  assert.deepEqual(r["t1"], [2 * 2 * 6 + 3 * 1, 2 * 3 * 6 + 3 * 2, 2 * 4 * 6 + 3 * 3]);
  assert.deepEqual(r["zeros_0"], [0, 0, 0, 1, 2, 3]);
});

test("an output named like a graph input is refused with a clear message", async () => {
  const g = new Graph();
  const xi = g.input("x", [3]);
  const w = g.input("w", [3]);
  await assert.rejects(compileGraph(g, { w: o.mul(xi, w) }), /output "w" has the name of a graph input/);
});

test("a graph of 150,000 nodes that all read one constant emits", () => {
  // beyond what a spread into push() takes (the node list is copied element by element), and a
  // shared value's reader list grows in place (copied per reader, this graph took minutes)
  const g = new Graph();
  const one = g.scalar(1);
  let t: Tensor = g.input("x", [3]);
  for (let i = 0; i < 150_000; i++) t = o.add(t, one);
  const model = toOnnx(g, { y: t });
  assert.equal(model.graph.nodes.length, 150_000);
  assert.ok(emitOnnx(g, { y: t }).length > 150_000 * 20);
});

test("an output that is a reshape comes from the session unreshaped and gets its shape in run", async () => {
  const g = new Graph();
  const xi = g.input("x", [2, 3]);
  const e = o.exp(xi);
  const flat = o.reshape(o.reshape(e, [3, 2]), [6]);
  const ofInput = o.reshape(xi, [3, 2]);
  // the session's outputs skip the reshapes (ONNX Runtime would copy a reshaped output)
  const s = sessionOutputs({ flat, ofInput, e });
  assert.equal(s["flat"], e);
  assert.equal(s["ofInput"], xi);
  assert.equal(s["e"], e);
  const c = await compileGraph(g, { flat, ofInput, e }, { threads: 1 });
  const data = Float32Array.of(0, 1, 2, -1, 0.5, 3);
  const r = await c.run({ x: new HostTensor(data, [2, 3]) });
  assert.deepEqual(r["flat"]!.shape, [6]);
  assert.deepEqual(r["ofInput"]!.shape, [3, 2]);
  assert.deepEqual(r["e"]!.shape, [2, 3]);
  const expected = Array.from(data, (v) => Math.fround(Math.exp(v)));
  for (const [i, v] of r["flat"]!.toArray().entries())
    assert.ok(Math.abs(v - expected[i]!) <= 1e-6 * expected[i]!);
  assert.deepEqual(r["ofInput"]!.toArray(), Array.from(data));
  assert.deepEqual(r["e"]!.toArray(), r["flat"]!.toArray());
});

test("graphs that differ only in a final reshape get their own shapes (the session cache tells them apart)", async () => {
  const feeds = {
    x: new HostTensor(
      Float32Array.from({ length: 24 }, (_, i) => i),
      [2, 3, 4],
    ),
  };
  for (const shape of [[6, 4], [4, 1, 6], [24]]) {
    const g = new Graph();
    const y = o.reshape(o.mul(g.input("x", [2, 3, 4]), 2), shape);
    const r = await (await compileGraph(g, { y }, { threads: 1 })).run(feeds);
    assert.deepEqual(r["y"]!.shape, shape);
    assert.deepEqual(
      r["y"]!.toArray(),
      Array.from({ length: 24 }, (_, i) => 2 * i),
    );
  }
});
