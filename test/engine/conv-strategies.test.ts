/**
 * The convolution-gradient lowerings of `src/onnx/conv-grad.ts` beyond what `primitives.test.ts`
 * covers: every weight-gradient strategy (the "convWeightGrad" pass set to it) on every geometry of
 * cases-conv.ts, all strategies against each other on U-Net-sized shapes, the "auto" rule against
 * its table, and the flipped-Conv path of the input gradient.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { WeightGradStrategy } from "../../src/onnx/passes/options.ts";
import { weightGradStrategy } from "../../src/onnx/passes/weight-grad.ts";
import { evaluate } from "../../src/runtime/compile.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import { convAttrs } from "../../src/tensor/ops.ts";
import type { Tensor } from "../../src/tensor/symbolic.ts";
import { assertAllclose } from "../support/allclose.ts";
import { checkGrad, checkRoundTrip, type OpCase, TestRng } from "../support/check.ts";
import { convOutShape } from "../support/ref-conv.ts";
import { GEOMETRIES, STRATEGIES, weightGradCase } from "./cases-conv.ts";
import { checkRoundTripWith } from "./check-passes.ts";

/** Every strategy (the record makes the compiler list a new one here). */
const ALL: Record<WeightGradStrategy, true> = {
  auto: true,
  "conv-batch-transposed": true,
  "im2col-matmul": true,
  "gather-matmul": true,
  "gather-gemm": true,
  "split-gather": true,
};

for (const strategy of STRATEGIES) {
  describe(`convWeightGrad (${strategy})`, () => {
    for (const g of GEOMETRIES) {
      const c = weightGradCase(g);
      test(`${g.name}: ONNX round trip`, () =>
        checkRoundTripWith({ ...c, name: `${c.name} (${strategy})` }, { convWeightGrad: strategy }));
    }
  });
}

/** U-Net-sized shapes (too large for finite differences): every strategy agrees with im2col-matmul. */
const UNET_SHAPES = [
  { name: "3x3 pad 1 [4,16,8,8]", x: [4, 16, 8, 8], w: [24, 16, 3, 3], a: convAttrs({ padding: 1 }) },
  {
    name: "3x3 stride 2 [3,8,9,10]",
    x: [3, 8, 9, 10],
    w: [8, 8, 3, 3],
    a: convAttrs({ padding: 1, stride: 2 }),
  },
  { name: "1x1 [2,32,6,6]", x: [2, 32, 6, 6], w: [16, 32, 1, 1], a: convAttrs({}) },
];

test("all weight-gradient strategies agree on U-Net-sized shapes", async () => {
  for (const s of UNET_SHAPES) {
    const rng = TestRng.fromName(s.name);
    const gShape = convOutShape(s.x, s.w, s.a);
    const fill = (shape: readonly number[]) => {
      const n = shape.reduce((p, q) => p * q, 1);
      return new HostTensor(
        Float32Array.from({ length: n }, () => rng.normal()),
        shape,
      );
    };
    const feeds = { x: fill(s.x), g: fill(gShape) };
    // one weight gradient per strategy in one graph, the pass told which node takes which
    const picks = new Map<Tensor, WeightGradStrategy>();
    const outs = await evaluate(
      feeds,
      ({ x, g }, gr) =>
        Object.fromEntries(
          (Object.keys(ALL) as WeightGradStrategy[]).map((strategy) => {
            const dw = gr.apply("convWeightGrad", [x!, g!], { ...s.a, wShape: s.w });
            picks.set(dw, strategy);
            return [strategy, dw];
          }),
        ),
      { passes: { convWeightGrad: (n) => picks.get(n.output)! } },
    );
    const want = outs["im2col-matmul"]!;
    for (const [strategy, got] of Object.entries(outs)) {
      assertAllclose(got, want, { what: `${s.name} (${strategy})`, rtol: 1e-4, atol: 1e-4 });
    }
  }
});

/** Rows of the table in `weightGradStrategy`'s comment: (x shape, w shape, stride) → the pick. */
const PICKS: readonly [readonly number[], readonly number[], number, WeightGradStrategy][] = [
  [[64, 1, 32, 32], [32, 1, 3, 3], 1, "im2col-matmul"],
  [[64, 3, 32, 32], [64, 3, 3, 3], 1, "im2col-matmul"],
  [[64, 32, 32, 32], [32, 32, 3, 3], 1, "split-gather"],
  [[64, 64, 32, 32], [64, 64, 3, 3], 1, "split-gather"],
  [[64, 64, 16, 16], [64, 64, 3, 3], 1, "gather-gemm"],
  [[64, 64, 8, 8], [64, 64, 3, 3], 1, "gather-gemm"],
  [[64, 64, 16, 16], [128, 64, 3, 3], 1, "gather-gemm"],
  [[64, 32, 32, 32], [32, 32, 3, 3], 2, "gather-gemm"],
  [[64, 128, 8, 8], [128, 128, 3, 3], 1, "gather-gemm"],
  [[64, 192, 16, 16], [64, 192, 3, 3], 1, "gather-gemm"],
  [[64, 96, 32, 32], [32, 96, 3, 3], 1, "split-gather"],
  [[64, 64, 32, 32], [64, 64, 3, 3], 2, "gather-gemm"],
  [[64, 64, 64, 64], [128, 64, 3, 3], 1, "gather-matmul"],
  [[64, 32, 32, 32], [1, 32, 3, 3], 1, "split-gather"],
  [[64, 64, 16, 16], [64, 64, 3, 3], 2, "gather-gemm"],
  [[64, 128, 8, 8], [128, 128, 1, 1], 1, "im2col-matmul"],
];

test("auto picks the measured-fastest strategy of the table", () => {
  for (const [x, w, stride, want] of PICKS) {
    const a = convAttrs({ stride, padding: w[2] === 3 ? 1 : 0 });
    assert.equal(weightGradStrategy({ ...a, wShape: w }, x), want, `${x} * ${w} /${stride}`);
  }
});

/**
 * cases-conv.ts's geometries have fewer than 8 channels, where the input gradient runs as ONNX
 * ConvTranspose; these take the flipped-Conv path (stride 1, no groups, ≥ 8 input channels).
 */
const WIDE: readonly { name: string; x: readonly number[]; w: readonly number[]; pad: number }[] = [
  { name: "3x3 pad 1, 8 channels", x: [2, 8, 4, 4], w: [3, 8, 3, 3], pad: 1 },
  { name: "3x3 pad 0, 9 channels", x: [1, 9, 5, 4], w: [2, 9, 3, 3], pad: 0 },
  { name: "1x1, 8 channels", x: [2, 8, 3, 3], w: [4, 8, 1, 1], pad: 0 },
];

describe("convTranspose, flipped-Conv path", () => {
  for (const g of WIDE) {
    const a = convAttrs({ padding: g.pad });
    const c: OpCase = {
      name: `convTranspose ${g.name} (Conv fast path)`,
      args: { g: { shape: convOutShape(g.x, g.w, a) }, w: { shape: g.w } },
      build: (t, gr) => gr.apply("convTranspose", [t["g"]!, t["w"]!], { ...a, outShape: g.x }),
    };
    test(`${g.name}: ONNX round trip`, () => checkRoundTrip(c));
    test(`${g.name}: gradient`, () => checkGrad(c));
  }
});

test("auto resolves to a concrete strategy", () => {
  for (const s of UNET_SHAPES) {
    const picked = weightGradStrategy({ ...s.a, wShape: s.w }, s.x);
    assert.ok(picked in ALL && picked !== ("auto" as string), `auto picked ${picked}`);
  }
});
