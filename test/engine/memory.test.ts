/**
 * What a train step keeps from its forward pass and how large its transient buffers get: the
 * structure of the emitted graphs that decides peak memory (the measured figures are in
 * docs/benchmarks.md).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { toOnnx } from "../../src/onnx/emit.ts";
import { batchChunks, COLUMN_SLICE_BYTES, weightGradStrategy } from "../../src/onnx/passes/weight-grad.ts";
import { evaluate } from "../../src/runtime/compile.ts";
import { grad } from "../../src/tensor/autodiff.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import * as o from "../../src/tensor/ops.ts";
import { Graph, type Tensor } from "../../src/tensor/symbolic.ts";
import { assertAllclose } from "../support/allclose.ts";
import { TestRng } from "../support/check.ts";

test("the backward pass of silu(x·w + b) recomputes the affine: the forward's sigmoid and affine are not kept", () => {
  const g = new Graph();
  const x = g.input("x", [4, 8, 6, 6]);
  const w = g.input("w", [1, 8, 1, 1]);
  const b = g.input("b", [1, 8, 1, 1]);
  const a = o.add(o.mul(x, w), b);
  const y = o.silu(a);
  const loss = o.sum(o.mul(y, y));
  const [dx, dw, db] = grad(loss, [x, w, b]);
  const model = toOnnx(g, { loss, dx: dx!, dw: dw!, db: db! });
  const nodes = model.graph.nodes;
  // the forward affine's output feeds exactly the forward silu (Sigmoid and Mul), nothing else
  const mulOut = nodes.find((n) => n.opType === "Mul" && n.inputs[0] === "x" && n.inputs[1] === "w")!
    .outputs[0]!;
  const fwdAdd = nodes.find((n) => n.opType === "Add" && n.inputs[0] === mulOut && n.inputs[1] === "b")!;
  const aName = fwdAdd.outputs[0]!;
  const users = nodes.filter((n) => n.inputs.includes(aName)).map((n) => n.opType);
  assert.deepEqual(users.sort(), ["Mul", "Sigmoid"]);
  // and the forward sigmoid's output is read only by the forward product
  const sig = nodes.find((n) => n.opType === "Sigmoid" && n.inputs[0] === aName)!.outputs[0]!;
  assert.equal(nodes.filter((n) => n.inputs.includes(sig)).length, 1);
  // the backward pass has a sigmoid of its own, of a recomputed affine
  assert.equal(nodes.filter((n) => n.opType === "Sigmoid").length, 2);
});

test("a conv's weight gradient recomputes a silu-of-affine or upsampled input: the forward's is read by the forward only", () => {
  const g = new Graph();
  const x = g.input("x", [4, 8, 6, 6]);
  const a = g.input("a", [1, 8, 1, 1]);
  const b = g.input("b", [1, 8, 1, 1]);
  const w = g.input("w", [8, 8, 3, 3]);
  const s = o.silu(o.add(o.mul(x, a), b));
  const h = o.conv2d(s, w, undefined, { padding: 1 });
  const up = o.upsampleNearest(h, 2);
  const y = o.conv2d(up, w, undefined, { padding: 1 });
  const loss = o.sum(o.mul(y, y));
  const grads = grad(loss, [x, a, b, w]);
  const nodes = toOnnx(g, { loss, ...Object.fromEntries(grads.map((d, i) => [`d${i}`, d!])) }).graph.nodes;
  const readers = (v: string) => nodes.filter((n) => n.inputs.includes(v)).map((n) => n.opType);
  // the forward SiLU (Sigmoid + Mul of the affine) feeds the forward conv only
  const sigmoids = nodes.filter((n) => n.opType === "Sigmoid");
  const fwdSilu = nodes.find((n) => n.opType === "Mul" && n.inputs[1] === sigmoids[0]!.outputs[0])!;
  assert.deepEqual(readers(fwdSilu.outputs[0]!), ["Conv"]);
  // the forward upsampling feeds the forward conv only; the backward upsamples again
  const resizes = nodes.filter((n) => n.opType === "Resize");
  assert.equal(resizes.length, 2);
  assert.deepEqual(readers(resizes[0]!.outputs[0]!), ["Conv"]);
});

test("a product's gradient recomputes a GELU of a value the backward keeps anyway: the forward's GELU feeds the forward product only", async () => {
  for (const act of [o.gelu, o.geluTanh]) {
    const g = new Graph();
    const h = g.input("h", [4, 16, 32]);
    const u = g.input("u", [4, 16, 32]);
    const y = o.mul(h, act(u)); // GEGLU's h · gelu(gate)
    const loss = o.sum(o.mul(y, y));
    const [dh, du] = grad(loss, [h, u]);
    const nodes = toOnnx(g, { loss, dh: dh!, du: du! }).graph.nodes;
    const op = act === o.gelu ? "Gelu" : "FastGelu";
    const gelus = nodes.filter((n) => n.opType === op);
    assert.equal(gelus.length, 2, `${op}: the forward's and the backward's`);
    const fwd = gelus.find((n) => n.inputs[0] === "u")!;
    assert.deepEqual(
      nodes.filter((n) => n.inputs.includes(fwd.outputs[0]!)).map((n) => n.opType),
      ["Mul"],
    );
  }
  // the same values as without the pass
  const rng = TestRng.fromName("gelu recompute");
  const fill = () =>
    new HostTensor(
      Float32Array.from({ length: 24 }, () => rng.normal()),
      [2, 12],
    );
  const feeds = { h: fill(), u: fill() };
  const run = (passes?: readonly []) =>
    evaluate(feeds, (t) => {
      const y = o.mul(t["h"]!, o.gelu(t["u"]!));
      const [dh, du] = grad(o.sum(o.mul(y, y)), [t["h"]!, t["u"]!], undefined, passes ? { passes } : {});
      return { dh: dh!, du: du! };
    });
  const [a, b] = [await run(), await run([])];
  assertAllclose(a["dh"]!, b["dh"]!);
  assertAllclose(a["du"]!, b["du"]!);
});

test("a linear layer's weight gradient recomputes a modulated norm or a GELU of its input: the forward's feeds the forward product only", async () => {
  // a DiT block's MLP: fc2(geluTanh(fc1(x̂·(1 + scale) + shift))), x̂ a layer norm
  const mlp = (t: Record<string, Tensor>): Tensor => {
    const xn = o.standardize(t["x"]!, 2, 1e-6); // [2, 16, 8]
    const mod = o.add(o.mul(xn, o.add(t["scale"]!, 1)), t["shift"]!); // scale, shift [2, 1, 8]
    const h = o.geluTanh(o.matmul(mod, o.transpose(t["w1"]!, [1, 0]))); // [2, 16, 32]
    return o.matmul(h, o.transpose(t["w2"]!, [1, 0])); // [2, 16, 8]
  };
  const shapes: Record<string, number[]> = {
    x: [2, 16, 8],
    scale: [2, 1, 8],
    shift: [2, 1, 8],
    w1: [32, 8],
    w2: [8, 32],
    r: [2, 16, 8],
  };
  const wrt = ["x", "scale", "shift", "w1", "w2"];
  const g = new Graph();
  const t = Object.fromEntries(Object.entries(shapes).map(([k, s]) => [k, g.input(k, s)]));
  const loss = o.sum(o.mul(mlp(t), t["r"]!));
  const grads = grad(
    loss,
    wrt.map((k) => t[k]!),
  );
  const nodes = toOnnx(g, { loss, ...Object.fromEntries(grads.map((d, i) => [`d${i}`, d!])) }).graph.nodes;
  const readers = (v: string) => nodes.filter((n) => n.inputs.includes(v)).map((n) => n.opType);
  const gelus = nodes.filter((n) => n.opType === "FastGelu");
  assert.equal(gelus.length, 2, "the forward's GELU and the backward's");
  assert.deepEqual(readers(gelus[0]!.outputs[0]!), ["MatMul"]);
  // the modulated norm (the Add of the shift) feeds the forward product only; the backward adds the shift again
  const shiftAdds = nodes.filter((n) => n.opType === "Add" && n.inputs.includes("shift"));
  assert.equal(shiftAdds.length, 2);
  assert.deepEqual(readers(shiftAdds[0]!.outputs[0]!), ["MatMul"]);
  // the same gradients as without the pass
  const rng = TestRng.fromName("linear recompute");
  const feeds = Object.fromEntries(
    Object.entries(shapes).map(([k, s]) => [
      k,
      new HostTensor(
        Float32Array.from({ length: s.reduce((a, b) => a * b, 1) }, () => rng.normal()),
        s,
      ),
    ]),
  );
  const run = (passes?: readonly []) =>
    evaluate(feeds, (f) => {
      const gs = grad(
        o.sum(o.mul(mlp(f), f["r"]!)),
        wrt.map((k) => f[k]!),
        undefined,
        passes ? { passes } : {},
      );
      return Object.fromEntries(gs.map((d, i) => [`d_${wrt[i]}`, d!]));
    });
  const [a, b] = [await run(), await run([])];
  for (const k of wrt) assertAllclose(a[`d_${k}`]!, b[`d_${k}`]!, { what: k, rtol: 1e-5, atol: 1e-5 });
});

test("recomputations are shared within one backward pass, not with another over the same graph", () => {
  const build = () => {
    const g = new Graph();
    const x = g.input("x", [2, 8, 6, 6]);
    const a = g.input("a", [1, 8, 1, 1]);
    const b = g.input("b", [1, 8, 1, 1]);
    const w = g.input("w", [8, 8, 3, 3]);
    const y = o.conv2d(o.silu(o.add(o.mul(x, a), b)), w, undefined, { padding: 1 });
    return { g, params: [x, a, b, w], y };
  };
  const count = (g: Graph, grads: (Tensor | null)[]) =>
    toOnnx(g, Object.fromEntries(grads.map((d, i) => [`d${i}`, d!]))).graph.nodes.length;
  // the second of two backward passes needs exactly the nodes it needs alone
  const once = build();
  const alone = count(once.g, grad(o.sum(o.mul(once.y, once.y)), once.params));
  const twice = build();
  grad(o.sum(twice.y), twice.params);
  assert.equal(count(twice.g, grad(o.sum(o.mul(twice.y, twice.y)), twice.params)), alone);
});

test("weight gradients whose columns exceed COLUMN_SLICE_BYTES run in batch slices and agree with the one-piece product", async () => {
  const xShape = [16, 32, 32, 32];
  const wShape = [32, 32, 3, 3];
  const a = o.convAttrs({ padding: 1 });
  const attrs = { ...a, wShape };
  const strategy = weightGradStrategy(attrs, xShape);
  const dims = { N: 16, C: 32, H: 32, W: 32, O: 32, Ho: 32, Wo: 32, kh: 3, kw: 3 };
  const k = batchChunks(strategy, dims, a);
  assert.ok(k > 1 && 16 % k === 0, `${strategy} in ${k} slices`);
  assert.equal(batchChunks("split-gather", { ...dims, N: 2 }, a), 1);
  assert.equal(batchChunks("conv-batch-transposed", dims, a), 1);
  assert.ok(COLUMN_SLICE_BYTES >= 2 ** 20);
  const rng = TestRng.fromName("sliced weight gradient");
  const fill = (shape: number[]) =>
    new HostTensor(
      Float32Array.from({ length: shape.reduce((p, q) => p * q, 1) }, () => rng.normal()),
      shape,
    );
  let whole: Tensor | undefined;
  const out = await evaluate(
    { x: fill(xShape), g: fill(xShape) },
    ({ x, g }, gr) => {
      whole = gr.apply("convWeightGrad", [x!, g!], attrs);
      return { sliced: gr.apply("convWeightGrad", [x!, g!], attrs), whole };
    },
    { passes: { convWeightGrad: (n) => (n.output === whole ? "conv-batch-transposed" : "auto") } },
  );
  assertAllclose(out["sliced"]!, out["whole"]!, { what: "dW", rtol: 1e-4, atol: 1e-3 });
});

test("graphs for a GPU take the weight gradient in one piece: no batch slices, no n-ary Sum", () => {
  const g = new Graph();
  const x = g.input("x", [16, 32, 32, 32]);
  const dy = g.input("g", [16, 32, 32, 32]);
  const dw = g.apply("convWeightGrad", [x, dy], {
    ...o.convAttrs({ padding: 1 }),
    wShape: [32, 32, 3, 3],
  });
  const ops = (target: "cpu" | "gpu") => toOnnx(g, { dw }, { target }).graph.nodes.map((n) => n.opType);
  const cpu = ops("cpu");
  const gpu = ops("gpu");
  assert.ok(cpu.includes("Sum"), "the CPU graph joins its batch slices with a Sum");
  assert.ok(!gpu.includes("Sum"), `the GPU graph has no Sum: ${gpu.join(" ")}`);
  assert.ok(gpu.length < cpu.length, `${gpu.length} nodes against ${cpu.length}`);
});

test("the MNIST U-Net's sampling and training graphs leave no node output unread", async () => {
  // ONNX Runtime keeps an unread output's buffer for the rest of the run (a group-norm variant whose
  // LayerNormalization outputs went unread raised a sampling process's peak RSS by ~360 MiB)
  const { readFileSync } = await import("node:fs");
  const { resolveUNetConfig } = await import("../../src/models/unet/index.ts");
  const { unet2d } = await import("../../src/models/unet/unet.ts");
  const { ParamScope } = await import("../../src/tensor/params.ts");
  const cfg = resolveUNetConfig(
    JSON.parse(readFileSync(new URL("../fixtures/unet-configs/unet-mnist.json", import.meta.url), "utf8")),
  );
  const unread = (g: Graph, outputs: Record<string, Tensor>, nchwcBlock = 0) => {
    const m = toOnnx(g, outputs, { passes: { nchwc: nchwcBlock } });
    const read = new Set([...m.graph.nodes.flatMap((n) => n.inputs), ...m.graph.outputs.map((v) => v.name)]);
    return m.graph.nodes.flatMap((n) => n.outputs.filter((v) => v && !read.has(v)).map(() => n.opType));
  };
  const g = new Graph();
  const x = g.input("x", [2, 1, 32, 32]);
  const t = g.input("t", [2]);
  const labels = g.input("labels", [2], "int64");
  const y = unet2d(ParamScope.root(g), cfg, x, t, labels);
  assert.deepEqual(unread(g, { y }), []);
  // the same with blocked convolutions and activations kept blocked between them (nchwc-layout.ts)
  assert.deepEqual(unread(g, { y }, 8), []);
  // training: only the LayerNormalization pairs of standardize and its gradient's invStdDev, each
  // with one unread output, which ONNX Runtime's common-subexpression pass merges into one node
  const params = g.inputs.filter((p) => !["x", "t", "labels"].includes(p.inputName!));
  const loss = o.mean(o.square(y));
  const grads = grad(loss, params);
  const left = unread(g, { loss, ...Object.fromEntries(grads.map((d, i) => [`d${i}`, d])) });
  assert.ok(left.length > 0 && left.every((op) => op === "LayerNormalization"), left.join(", "));
  const leftBlocked = unread(g, { loss, ...Object.fromEntries(grads.map((d, i) => [`d${i}`, d])) }, 8);
  assert.ok(
    leftBlocked.every((op) => op === "LayerNormalization"),
    leftBlocked.join(", "),
  );
});
