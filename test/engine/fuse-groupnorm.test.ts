/**
 * Group norms of forward-only graphs emitted as one BatchNormalization pass (src/onnx/fuse-groupnorm.ts):
 * when the rewrite applies, when it must not, and that it computes the traced group norm.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import * as nn from "../../src/nn/index.ts";
import { emitOnnx, toOnnx } from "../../src/onnx/emit.ts";
import { compileGraph } from "../../src/runtime/compile.ts";
import { loadGraph } from "../../src/runtime/session.ts";
import { grad } from "../../src/tensor/autodiff.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import * as o from "../../src/tensor/ops.ts";
import { init, ParamScope } from "../../src/tensor/params.ts";
import { Graph, type Tensor } from "../../src/tensor/symbolic.ts";
import { assertAllclose } from "../support/allclose.ts";
import { TestRng } from "../support/check.ts";

function gnGraph(shape: number[], groups: number) {
  const g = new Graph();
  const x = g.input("x", shape);
  const y = nn.groupNorm(ParamScope.root(g), x, groups);
  return { g, x, y };
}
const ops = (g: Graph, outputs: Record<string, Tensor>) =>
  toOnnx(g, outputs).graph.nodes.map((n) => n.opType);

test("a forward-only group norm becomes statistics and one BatchNormalization", () => {
  const { g, y } = gnGraph([2, 8, 4, 4], 4);
  const kinds = ops(g, { y: o.silu(y) });
  assert.equal(kinds.filter((k) => k === "BatchNormalization").length, 1);
  assert.ok(!kinds.includes("LayerNormalization"));
  // rank 3 (attention's group norm over [N, C, tokens]) too
  const r3 = gnGraph([2, 8, 6], 2);
  assert.ok(ops(r3.g, { y: r3.y }).includes("BatchNormalization"));
});

test("group norms whose normalized tensor is read elsewhere keep the traced form", () => {
  // a backward pass reads it
  const { g, x, y } = gnGraph([2, 8, 4, 4], 4);
  const loss = o.sum(o.mul(y, y));
  const [dx] = grad(loss, [x]);
  const kinds = ops(g, { loss, dx: dx! });
  assert.ok(kinds.includes("LayerNormalization"));
  assert.ok(!kinds.includes("BatchNormalization"));
  // an output of the graph is the scaled tensor before its shift
  const h = new Graph();
  const hx = h.input("x", [2, 8, 4, 4]);
  const p = ParamScope.root(h);
  const grouped = o.reshape(hx, [2, 4, -1]);
  const scaled = o.mul(
    o.reshape(nn.standardize(grouped, [2], 1e-5), hx.shape),
    o.reshape(p.param("w", [8], init.ones()), [1, 8, 1, 1]),
  );
  const shifted = o.add(scaled, o.reshape(p.param("b", [8], init.zeros()), [1, 8, 1, 1]));
  assert.ok(!ops(h, { scaled, shifted }).includes("BatchNormalization"));
});

test("the fused group norm computes the traced one (large offsets included)", async () => {
  const rng = TestRng.fromName("fused group norm");
  const shape = [3, 16, 5, 7];
  const n = shape.reduce((p, q) => p * q, 1);
  const data = Float32Array.from({ length: n }, (_, i) => rng.normal() * 2 + (i % 3) + 4);
  const feeds = {
    x: new HostTensor(data, shape),
    "norm.weight": new HostTensor(
      Float32Array.from({ length: 16 }, () => rng.normal()),
      [16],
    ),
    "norm.bias": new HostTensor(
      Float32Array.from({ length: 16 }, () => rng.normal()),
      [16],
    ),
  };
  const run = async (withGrad: boolean) => {
    const g = new Graph();
    const x = g.input("x", shape);
    const y = nn.groupNorm(ParamScope.root(g).sub("norm"), x, 4);
    const outputs: Record<string, Tensor> = { y };
    if (withGrad) outputs["dx"] = grad(o.sum(y), [x])[0]!;
    return (await compileGraph(g, outputs, { threads: 1 })).run(feeds);
  };
  const fused = await run(false);
  const traced = await run(true); // the backward pass keeps the traced form
  assertAllclose(fused["y"]!, traced["y"]!, { what: "group norm", rtol: 1e-4, atol: 1e-4 });
});

test("graphs for a GPU keep the traced group norm: LayerNormalization, Mul, Add; the same values", async () => {
  const { g, y } = gnGraph([2, 8, 4, 4], 4);
  const out = { y: o.silu(y) };
  const gpu = toOnnx(g, out, { target: "gpu" }).graph.nodes.map((n) => n.opType);
  assert.ok(gpu.includes("LayerNormalization"));
  assert.ok(!gpu.includes("BatchNormalization") && !gpu.includes("ReduceSumSquare"));
  // both forms on the CPU provider
  const rng = TestRng.fromName("gn-gpu-target");
  const specs = g.inputs.map((t) => ({ name: t.inputName!, dtype: t.dtype, shape: t.shape }));
  const feeds = Object.fromEntries(
    specs.map((s) => [
      s.name,
      new HostTensor(
        Float32Array.from({ length: s.shape.reduce((p, q) => p * q, 1) }, () => 3 + 2 * rng.normal()),
        s.shape,
      ),
    ]),
  );
  const outSpec = [{ name: "y", dtype: "float32" as const, shape: [2, 8, 4, 4] }];
  const run = async (target: "cpu" | "gpu") =>
    (await loadGraph(emitOnnx(g, out, { target }), specs, outSpec, { threads: 1 })).run(feeds);
  assertAllclose((await run("gpu"))["y"]!, (await run("cpu"))["y"]!, { atol: 1e-5, rtol: 1e-5 });
});
