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
function convStep(C: number, O: number, kh = 3, kw = 3) {
  const g = new Graph();
  const x = g.input("x", [4, C, 8, 8]);
  const w = g.input("w", [O, C, kh, kw]);
  const y = o.conv2d(x, w, undefined, { padding: [(kh - 1) / 2, (kw - 1) / 2] });
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

test("which convolutions are emitted blocked: input channels in whole blocks or fewer than one", () => {
  const ops = (C: number, O: number, block: number) => {
    const { g, outputs } = convStep(C, O);
    return toOnnx(g, outputs, { passes: { nchwc: block } }).graph.nodes.map(
      (n) => `${n.domain ?? ""}:${n.opType}`,
    );
  };
  const count = (kinds: string[], k: string) => kinds.filter((n) => n === k).length;
  // the forward conv and the input gradient's conv; the weight gradient is a product of columns
  const blocked = ops(16, 8, 8);
  assert.equal(count(blocked, "com.microsoft.nchwc:Conv"), 2);
  assert.equal(count(blocked, ":Conv"), 0);
  assert.ok(blocked.includes("com.microsoft.nchwc:ReorderInput"));
  assert.ok(blocked.includes("com.microsoft.nchwc:ReorderOutput"));
  // 8 output channels on a 16-wide block: the filters are padded with zeros to a whole block
  const padded = ops(16, 8, 16);
  assert.equal(count(padded, "com.microsoft.nchwc:Conv"), 2);
  assert.ok(padded.includes(":Pad"));
  // 12 input channels: the forward conv stays plain, the input gradient (8 → 12) runs blocked
  const mixed = ops(12, 8, 8);
  assert.equal(count(mixed, ":Conv"), 1);
  assert.equal(count(mixed, "com.microsoft.nchwc:Conv"), 1);
  // blocking off: nothing from the NCHWc domain
  const plain = ops(16, 8, 0);
  assert.ok(!plain.some((n) => n.startsWith("com.microsoft.nchwc")));
  assert.equal(count(plain, ":Conv"), 2);
});

test("a conv step through the blocked kernel equals the plain one", async () => {
  const rng = TestRng.fromName("nchwc step");
  const fill = (shape: number[]) =>
    new HostTensor(
      Float32Array.from({ length: shape.reduce((p, q) => p * q, 1) }, () => rng.normal()),
      shape,
    );
  // whole blocks (the weights reordered by two transposes, the input gradient's kernel flipped by a
  // Gather over its taps), a non-square kernel, a 1×1 one, and channels that need padding
  for (const [C, O, kh, kw] of [
    [32, 16, 3, 3],
    [16, 8, 1, 3],
    [8, 16, 1, 1],
    [16, 12, 3, 3],
  ] as const) {
    const feeds = { x: fill([4, C, 8, 8]), w: fill([O, C, kh, kw]) };
    const run = async () => {
      const { g, outputs } = convStep(C, O, kh, kw);
      return (await compileGraph(g, outputs, { threads: 1 })).run(feeds);
    };
    delete process.env["DIFFUSE_NCHWC"];
    const blocked = await run();
    process.env["DIFFUSE_NCHWC"] = "0";
    const plain = await run();
    for (const k of ["y", "dx", "dw"]) {
      assertAllclose(blocked[k]!, plain[k]!, {
        what: `${k} of [${O},${C},${kh},${kw}]`,
        rtol: 1e-4,
        atol: 1e-3,
      });
    }
  }
});

test("whole-block weights are reordered without a 6-D transpose or a reversing Slice", () => {
  const { g, outputs } = convStep(16, 16);
  const nodes = toOnnx(g, outputs, { passes: { nchwc: 8 } }).graph.nodes;
  const transposes = nodes.filter((n) => n.opType === "Transpose");
  const ranks = transposes.map((n) => n.attributes?.["perm"]?.value as number[]).map((p) => p.length);
  assert.ok(
    ranks.every((r) => r < 6),
    `transpose ranks ${ranks}`,
  );
  assert.ok(!nodes.some((n) => n.opType === "Slice" && n.inputs.length === 5));
});
