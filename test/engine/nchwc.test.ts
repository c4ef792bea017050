/**
 * Convolutions in ONNX Runtime's blocked layout (src/onnx/nchwc.ts): when the engine emits them, and
 * that a step through them computes what the plain Conv computes.
 */
import assert from "node:assert/strict";
import { afterEach, test } from "node:test";
import { toOnnx } from "../../src/onnx/emit.ts";
import { compileGraph } from "../../src/runtime/compile.ts";
import { nchwcBlockSize } from "../../src/runtime/session.ts";
import { grad } from "../../src/tensor/autodiff.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import * as o from "../../src/tensor/ops.ts";
import { Graph } from "../../src/tensor/symbolic.ts";
import { assertAllclose } from "../support/allclose.ts";
import { TestRng } from "../support/check.ts";

const saved = process.env["DIFFUSE_NCHWC"];
afterEach(() => {
  if (saved === undefined) delete process.env["DIFFUSE_NCHWC"];
  else process.env["DIFFUSE_NCHWC"] = saved;
});

/** conv → loss, with the gradients of x and w (the input gradient is a Conv too). */
function convStep(C: number, O: number) {
  const g = new Graph();
  const x = g.input("x", [4, C, 8, 8]);
  const w = g.input("w", [O, C, 3, 3]);
  const y = o.conv2d(x, w, undefined, { padding: 1 });
  const loss = o.sum(o.mul(y, y));
  const [dx, dw] = grad(loss, [x, w]);
  return { g, outputs: { y, dx: dx!, dw: dw! } };
}

test("ONNX Runtime's block size comes from ONNX Runtime; DIFFUSE_NCHWC=0 turns blocking off", async () => {
  const b = await nchwcBlockSize();
  assert.ok(b === 0 || (b >= 8 && b % 4 === 0), `block ${b}`);
  process.env["DIFFUSE_NCHWC"] = "0";
  assert.equal(await nchwcBlockSize(), 0);
  process.env["DIFFUSE_NCHWC"] = "yes";
  assert.throws(() => nchwcBlockSize(), /DIFFUSE_NCHWC must be 0 or 1, got "yes"/);
});

test("convolutions whose channels fill whole blocks are emitted blocked, the others as plain Conv", () => {
  const ops = (C: number, O: number, block: number) => {
    const { g, outputs } = convStep(C, O);
    return toOnnx(g, outputs, { nchwcBlock: block }).graph.nodes.map((n) => `${n.domain ?? ""}:${n.opType}`);
  };
  const blocked = ops(16, 8, 8);
  // the forward conv and the input gradient's conv; the weight gradient is a product of columns
  assert.equal(blocked.filter((n) => n === "com.microsoft.nchwc:Conv").length, 2);
  assert.equal(blocked.filter((n) => n === ":Conv").length, 0);
  assert.ok(blocked.includes("com.microsoft.nchwc:ReorderInput"));
  assert.ok(blocked.includes("com.microsoft.nchwc:ReorderOutput"));
  for (const plain of [ops(16, 8, 0), ops(12, 8, 8), ops(16, 8, 16)]) {
    assert.ok(!plain.some((n) => n.startsWith("com.microsoft.nchwc")));
    assert.equal(plain.filter((n) => n === ":Conv").length, 2);
  }
});

test("a conv step through the blocked kernel equals the plain one", async () => {
  const rng = TestRng.fromName("nchwc step");
  const fill = (shape: number[]) =>
    new HostTensor(
      Float32Array.from({ length: shape.reduce((p, q) => p * q, 1) }, () => rng.normal()),
      shape,
    );
  const feeds = { x: fill([4, 32, 8, 8]), w: fill([16, 32, 3, 3]) };
  const run = async () => {
    const { g, outputs } = convStep(32, 16);
    return (await compileGraph(g, outputs, { threads: 1 })).run(feeds);
  };
  const blocked = await run();
  process.env["DIFFUSE_NCHWC"] = "0";
  const plain = await run();
  for (const k of ["y", "dx", "dw"]) {
    assertAllclose(blocked[k]!, plain[k]!, { what: k, rtol: 1e-4, atol: 1e-3 });
  }
});
