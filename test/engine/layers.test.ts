/**
 * The composite layers of `src/nn/`:
 *
 * - every layer through the same finite-difference gradient check as the primitives (the layer's
 *   parameters are graph inputs, so they are differentiated too) and the ONNX round trip;
 * - group norm, attention and the other layers whose meaning is easy to get subtly wrong (head
 *   split, normalization axes, frequency layout) against values worked out here from their
 *   definitions, on tiny inputs.
 */
import { describe, test } from "node:test";
import * as nn from "../../src/nn/index.ts";
import { compileGraph } from "../../src/runtime/compile.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import * as o from "../../src/tensor/ops.ts";
import { ParamScope } from "../../src/tensor/params.ts";
import { Graph, type Tensor } from "../../src/tensor/symbolic.ts";
import { assertAllclose } from "../support/allclose.ts";
import { checkGrad, checkRoundTrip, type OpCase } from "../support/check.ts";

const layer = (
  name: string,
  args: OpCase["args"],
  f: (t: Readonly<Record<string, Tensor>>, p: ParamScope) => Tensor,
  extra: Partial<OpCase> = {},
): OpCase => ({ name, args, build: (t, g) => f(t, ParamScope.root(g)), ...extra });

const LAYERS: OpCase[] = [
  layer("linear over a batch of sequences", { x: { shape: [2, 3, 4] } }, (t, p) => nn.linear(p, t["x"]!, 5)),
  layer("linear without bias", { x: { shape: [3, 4] } }, (t, p) => nn.linear(p, t["x"]!, 2, { bias: false })),
  layer("conv2d 3x3 pad 1", { x: { shape: [2, 2, 5, 5] } }, (t, p) =>
    nn.conv2d(p, t["x"]!, 3, 3, { padding: 1 }),
  ),
  layer("conv2d stride 2 groups 2", { x: { shape: [1, 4, 6, 6] } }, (t, p) =>
    nn.conv2d(p, t["x"]!, 4, 3, { stride: 2, padding: 1, groups: 2 }),
  ),
  layer("conv2d 1x1 without bias", { x: { shape: [2, 3, 3, 3] } }, (t, p) =>
    nn.conv2d(p, t["x"]!, 2, 1, { bias: false }),
  ),
  layer("groupNorm 2 groups", { x: { shape: [2, 4, 3, 3] } }, (t, p) => nn.groupNorm(p, t["x"]!, 2)),
  layer("groupNorm one channel per group, no affine", { x: { shape: [1, 3, 2, 4] } }, (t, p) =>
    nn.groupNorm(p, t["x"]!, 3, 1e-5, false),
  ),
  layer("layerNorm", { x: { shape: [2, 3, 5] } }, (t, p) => nn.layerNorm(p, t["x"]!)),
  layer("standardize over axes 0, 2", { x: { shape: [3, 2, 4] } }, (t) =>
    nn.standardize(t["x"]!, [0, 2], 1e-5),
  ),
  layer("silu", { x: { shape: [2, 5] } }, (t) => nn.silu(t["x"]!)),
  layer("gelu", { x: { shape: [2, 5] } }, (t) => nn.gelu(t["x"]!)),
  layer("geluTanh", { x: { shape: [2, 5] } }, (t) => nn.geluTanh(t["x"]!)),
  layer("relu", { x: { shape: [2, 5], init: "awayFromZero" } }, (t) => nn.relu(t["x"]!)),
  layer(
    "scaledDotProductAttention",
    { q: { shape: [1, 2, 3, 4] }, k: { shape: [1, 2, 5, 4] }, v: { shape: [1, 2, 5, 3] } },
    (t) => nn.scaledDotProductAttention(t["q"]!, t["k"]!, t["v"]!),
  ),
  layer("self-attention, 2 heads", { x: { shape: [2, 3, 4] } }, (t, p) =>
    nn.multiHeadAttention(p, t["x"]!, { heads: 2 }),
  ),
  layer(
    "spatial self-attention (channels first), 2 heads of width 3",
    { x: { shape: [2, 4, 2, 3] } },
    (t, p) => nn.spatialSelfAttention(p, t["x"]!, { heads: 2, headDim: 3 }),
  ),
  layer(
    "cross-attention, 2 heads of width 3, no biases",
    { x: { shape: [1, 3, 4] }, ctx: { shape: [1, 5, 6] } },
    (t, p) =>
      nn.multiHeadAttention(p, t["x"]!, {
        heads: 2,
        headDim: 3,
        context: t["ctx"]!,
        qkvBias: false,
        outBias: false,
      }),
  ),
  layer("embedding", { ids: { shape: [2, 3], dtype: "int64", init: [4, 0, 4, 2, 1, 0] } }, (t, p) =>
    nn.embedding(p, t["ids"]!, 5, 3),
  ),
  layer("timestepEmbedding dim 8", { t: { shape: [3], init: "positive" } }, (t) =>
    nn.timestepEmbedding(t["t"]!, 8),
  ),
  layer("timestepEmbedding odd dim, cos first, scaled", { t: { shape: [2], init: "positive" } }, (t) =>
    nn.timestepEmbedding(t["t"]!, 7, { flipSinToCos: true, freqShift: 0, scale: 2 }),
  ),
  layer("upsampleNearest ×2", { x: { shape: [1, 2, 2, 3] } }, (t) => nn.upsampleNearest(t["x"]!)),
  layer("mse", { a: { shape: [2, 3] }, b: { shape: [2, 3] } }, (t) => nn.mse(t["a"]!, t["b"]!)),
  layer("msePerSample", { a: { shape: [3, 2, 2] }, b: { shape: [3, 2, 2] } }, (t) =>
    nn.msePerSample(t["a"]!, t["b"]!),
  ),
  layer(
    "weightedMse",
    { a: { shape: [3, 4] }, b: { shape: [3, 4] }, w: { shape: [3], init: "positive" } },
    (t) => nn.weightedMse(t["a"]!, t["b"]!, t["w"]!),
  ),
];

describe("layers: ONNX round trip and gradients", () => {
  for (const c of LAYERS) {
    test(`${c.name}: ONNX round trip`, () => checkRoundTrip(c));
    test(`${c.name}: gradient`, () => checkGrad(c));
  }
});

const f32 = (values: readonly number[], shape: readonly number[] = [values.length]) =>
  new HostTensor(Float32Array.from(values), shape);

/**
 * Runs a layer on given inputs and parameters: `inputs` become graph inputs before `f` runs;
 * `params` feed the parameters the layer declares (every one must be given).
 */
async function runLayer(
  inputs: Readonly<Record<string, HostTensor>>,
  params: Readonly<Record<string, HostTensor>>,
  f: (t: Readonly<Record<string, Tensor>>, p: ParamScope) => Tensor,
): Promise<HostTensor> {
  const g = new Graph();
  const t: Record<string, Tensor> = {};
  for (const [k, v] of Object.entries(inputs)) t[k] = g.input(k, v.shape, v.dtype);
  const p = ParamScope.root(g);
  const y = f(t, p);
  const declared = p.specs.map((s) => s.name).sort();
  const given = Object.keys(params).sort();
  if (declared.join() !== given.join())
    throw new Error(`layer declares [${declared}], test gives [${given}]`);
  const compiled = await compileGraph(g, { y }, { threads: 1 });
  return (await compiled.run({ ...inputs, ...params }))["y"]!;
}

const sigmoid = (z: number) => 1 / (1 + Math.exp(-z));

describe("layers against values from their definitions", () => {
  test("groupNorm: per-sample, per-group statistics, biased variance, per-channel affine", async () => {
    // x [1, 4, 1, 2]; groups {c0, c1} and {c2, c3}
    const x = f32([1, 2, 3, 6, 0, 0, 2, -2], [1, 4, 1, 2]);
    const eps = 1e-5;
    const y = await runLayer({ x }, { weight: f32([1, -1, 2, 0.5]), bias: f32([0, 1, 0, -1]) }, (t, p) =>
      nn.groupNorm(p, t["x"]!, 2, eps),
    );
    // group 0: {1, 2, 3, 6}, mean 3, variance (4 + 1 + 0 + 9)/4 = 3.5
    const s0 = 1 / Math.sqrt(3.5 + eps);
    // group 1: {0, 0, 2, −2}, mean 0, variance (0 + 0 + 4 + 4)/4 = 2
    const s1 = 1 / Math.sqrt(2 + eps);
    const want = [
      ...[-2 * s0, -1 * s0].map((v) => v * 1 + 0), // c0: w 1, b 0
      ...[0 * s0, 3 * s0].map((v) => v * -1 + 1), // c1: w −1, b 1
      ...[0, 0].map((v) => v * s1 * 2 + 0), // c2: w 2, b 0
      ...[2 * s1, -2 * s1].map((v) => v * 0.5 - 1), // c3: w 0.5, b −1
    ];
    assertAllclose(y, f32(want, [1, 4, 1, 2]), { what: "groupNorm" });
  });

  test("layerNorm normalizes each row over the last axis", async () => {
    const x = f32([1, 2, 3, 4, -1, -1, 1, 1], [2, 4]);
    const eps = 1e-5;
    const y = await runLayer({ x }, { weight: f32([1, 2, 1, 1]), bias: f32([0, 0, 0, 1]) }, (t, p) =>
      nn.layerNorm(p, t["x"]!, eps),
    );
    const a = 1 / Math.sqrt(1.25 + eps); // row 0: mean 2.5, variance (2.25 + 0.25 + 0.25 + 2.25)/4
    const b = 1 / Math.sqrt(1 + eps); // row 1: mean 0, variance 1
    assertAllclose(y, f32([-1.5 * a, -0.5 * a * 2, 0.5 * a, 1.5 * a + 1, -b, -b * 2, b, b + 1], [2, 4]));
  });

  test("scaledDotProductAttention: softmax(q kᵀ / √d) v", async () => {
    // one head, two queries, two keys, d = 2
    const q = f32([1, 0, 0, 1], [1, 1, 2, 2]);
    const k = f32([1, 0, 0, 2], [1, 1, 2, 2]);
    const v = f32([1, 2, 3, 4], [1, 1, 2, 2]);
    const y = await runLayer({ q, k, v }, {}, (t) => nn.scaledDotProductAttention(t["q"]!, t["k"]!, t["v"]!));
    // scores / √2: row 0 = [1, 0]/√2, row 1 = [0, 2]/√2; with two keys, p(key 0) = σ(s₀ − s₁)
    const p0 = sigmoid(1 / Math.SQRT2);
    const p1 = sigmoid(-2 / Math.SQRT2);
    const want = [p0 * 1 + (1 - p0) * 3, p0 * 2 + (1 - p0) * 4, p1 * 1 + (1 - p1) * 3, p1 * 2 + (1 - p1) * 4];
    assertAllclose(y, f32(want, [1, 1, 2, 2]), { what: "attention" });
  });

  test("multiHeadAttention: channels split into heads, each head attends alone", async () => {
    // identity projections, 2 heads of width 1: head h sees channel h only, scale 1/√1
    const x = f32([1, 2, 3, -1], [1, 2, 2]); // token 0 = (1, 2), token 1 = (3, −1)
    const eye = f32([1, 0, 0, 1], [2, 2]);
    const zero = f32([0, 0]);
    const y = await runLayer(
      { x },
      {
        "to_q.weight": eye,
        "to_q.bias": zero,
        "to_k.weight": eye,
        "to_k.bias": zero,
        "to_v.weight": eye,
        "to_v.bias": zero,
        "to_out.0.weight": f32([0, 1, 1, 0], [2, 2]), // swaps the two heads' outputs
        "to_out.0.bias": f32([0.5, -0.5]),
      },
      (t, p) => nn.multiHeadAttention(p, t["x"]!, { heads: 2 }),
    );
    // head 0 (values 1, 3): scores q·k = [[1, 3], [3, 9]]; head 1 (values 2, −1): [[4, −2], [−2, 1]]
    const h0 = [sigmoid(1 - 3) * 1 + sigmoid(3 - 1) * 3, sigmoid(3 - 9) * 1 + sigmoid(9 - 3) * 3];
    const h1 = [sigmoid(4 + 2) * 2 + sigmoid(-2 - 4) * -1, sigmoid(-2 - 1) * 2 + sigmoid(1 + 2) * -1];
    const want = [h1[0]! + 0.5, h0[0]! - 0.5, h1[1]! + 0.5, h0[1]! - 0.5];
    assertAllclose(y, f32(want, [1, 2, 2]), { what: "multi-head attention" });
  });

  test("spatialSelfAttention equals multiHeadAttention over the H·W tokens (same weights)", async () => {
    const [n, c, h, w] = [2, 8, 3, 2];
    const rnd = (shape: number[], seed: number) =>
      f32(
        Array.from({ length: shape.reduce((a, b) => a * b, 1) }, (_, i) => Math.sin(i * 1.3 + seed)),
        shape,
      );
    const params: Record<string, HostTensor> = {};
    ["to_q", "to_k", "to_v", "to_out.0"].forEach((name, i) => {
      params[`${name}.weight`] = rnd([c, c], i);
      params[`${name}.bias`] = rnd([c], i + 10);
    });
    const x = rnd([n, c, h, w], 20);
    const opts = { heads: 2, headDim: 4 };
    const channelsFirst = await runLayer({ x }, params, (t, p) => nn.spatialSelfAttention(p, t["x"]!, opts));
    const tokensFirst = await runLayer({ x }, params, (t, p) => {
      const tokens = o.transpose(o.reshape(t["x"]!, [n, c, h * w]), [0, 2, 1]);
      return o.reshape(o.transpose(nn.multiHeadAttention(p, tokens, opts), [0, 2, 1]), [n, c, h, w]);
    });
    assertAllclose(channelsFirst, tokensFirst, { what: "spatial self-attention" });
  });

  test("gelu is x·Φ(x) and geluTanh its tanh approximation", async () => {
    const x = f32([-0.5, 1, 2]);
    // Φ at −0.5, 1, 2 (standard normal CDF, tabulated)
    const phi = [0.3085375387259869, 0.8413447460685429, 0.9772498680518208];
    const y = await runLayer({ x }, {}, (t) => nn.gelu(t["x"]!));
    assertAllclose(y, f32([-0.5 * phi[0]!, 1 * phi[1]!, 2 * phi[2]!]));
    const yt = await runLayer({ x }, {}, (t) => nn.geluTanh(t["x"]!));
    const approx = (v: number) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)));
    assertAllclose(yt, f32([approx(-0.5), approx(1), approx(2)]));
    const ys = await runLayer({ x }, {}, (t) => nn.silu(t["x"]!));
    assertAllclose(ys, f32([-0.5 * sigmoid(-0.5), sigmoid(1), 2 * sigmoid(2)]));
  });

  test("timestepEmbedding: [sin(t·fᵢ), cos(t·fᵢ)] with fᵢ = 10000^(−i/(half − shift))", async () => {
    const t = f32([0, 1, 10]);
    const y = await runLayer({ t }, {}, (x) => nn.timestepEmbedding(x["t"]!, 6)); // half 3: f = 1, 1e-2, 1e-4
    const f = [1, 1e-2, 1e-4];
    const want = [0, 1, 10].flatMap((s) => [
      ...f.map((fi) => Math.sin(s * fi)),
      ...f.map((fi) => Math.cos(s * fi)),
    ]);
    assertAllclose(y, f32(want, [3, 6]), { atol: 1e-6 });
    // cos first, shift 0 (f = 10000^(−i/3)), odd width padded with a zero column
    const y2 = await runLayer({ t }, {}, (x) =>
      nn.timestepEmbedding(x["t"]!, 7, { flipSinToCos: true, freqShift: 0 }),
    );
    const g = [0, 1, 2].map((i) => 10000 ** (-i / 3));
    const want2 = [0, 1, 10].flatMap((s) => [
      ...g.map((gi) => Math.cos(s * gi)),
      ...g.map((gi) => Math.sin(s * gi)),
      0,
    ]);
    assertAllclose(y2, f32(want2, [3, 7]), { atol: 1e-6 });
  });

  test("embedding picks rows; upsampleNearest repeats pixels; mse averages squares", async () => {
    const table = f32([0, 1, 10, 11, 20, 21], [3, 2]);
    const e = await runLayer({ ids: HostTensor.int64([2, 0, 2]) }, { weight: table }, (t, p) =>
      nn.embedding(p, t["ids"]!, 3, 2),
    );
    assertAllclose(e, f32([20, 21, 0, 1, 20, 21], [3, 2]), { atol: 0 });
    const u = await runLayer({ x: f32([1, 2, 3, 4], [1, 1, 2, 2]) }, {}, (t) => nn.upsampleNearest(t["x"]!));
    assertAllclose(u, f32([1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4], [1, 1, 4, 4]), { atol: 0 });
    const a = f32([1, 2, 3, 4], [2, 2]);
    const b = f32([0, 2, 5, 4], [2, 2]);
    assertAllclose(await runLayer({ a, b }, {}, (t) => nn.mse(t["a"]!, t["b"]!)), f32([5 / 4], []));
    assertAllclose(await runLayer({ a, b }, {}, (t) => nn.msePerSample(t["a"]!, t["b"]!)), f32([0.5, 2]));
    const w = f32([2, 0.5]);
    assertAllclose(
      await runLayer({ a, b, w }, {}, (t) => nn.weightedMse(t["a"]!, t["b"]!, t["w"]!)),
      f32([(1 + 1) / 2], []),
    );
  });

  test("linear is x Wᵀ + b with W [out, in]; conv2d weight is [out, in/groups, k, k]", async () => {
    const x = f32([1, 2, 3], [1, 3]);
    const y = await runLayer(
      { x },
      { weight: f32([1, 0, -1, 2, 1, 0], [2, 3]), bias: f32([0.5, -1]) },
      (t, p) => nn.linear(p, t["x"]!, 2),
    );
    assertAllclose(y, f32([1 - 3 + 0.5, 2 + 2 - 1], [1, 2]));
    // 2×2 kernel, stride 1, no padding, on one 2×3 channel: two output pixels
    const img = f32([1, 2, 3, 4, 5, 6], [1, 1, 2, 3]);
    const c = await runLayer({ img }, { weight: f32([1, 0, 0, -1], [1, 1, 2, 2]), bias: f32([10]) }, (t, p) =>
      nn.conv2d(p, t["img"]!, 1, 2),
    );
    assertAllclose(c, f32([1 - 5 + 10, 2 - 6 + 10], [1, 1, 1, 2]));
  });
});
