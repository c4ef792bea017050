/**
 * Primitive test cases for the convolution family. One list of geometries (stride, padding,
 * dilation, groups, kernel sizes) is run through all three primitives:
 *
 * - conv(x, w[, b]);
 * - convTranspose(g, w) — the input gradient of conv. Its lowering has two paths, both covered:
 *   stride 1 without groups runs as a Conv with flipped weights ("fast path"); strides 2, groups
 *   and paddings larger than the kernel's reach run as ONNX ConvTranspose (with output_padding
 *   where the forward conv dropped rows);
 * - convWeightGrad(x, g) — the weight gradient, under each strategy.
 *
 * The gradient checks of convTranspose and convWeightGrad differentiate those primitives
 * themselves, so they check the second-order rules (conv ↔ convTranspose ↔ convWeightGrad).
 */

import type { WeightGradStrategy } from "../../src/onnx/passes/options.ts";
import { convAttrs } from "../../src/tensor/ops.ts";
import type { ConvAttrs } from "../../src/tensor/primitives.ts";
import type { OpCase } from "../support/check.ts";
import { convOutShape } from "../support/ref-conv.ts";

export type ConvPrim = "conv" | "convTranspose" | "convWeightGrad";

interface Geometry {
  name: string;
  x: readonly number[];
  w: readonly number[];
  a: ConvAttrs;
  bias?: boolean;
}

const geo = (
  name: string,
  x: readonly number[],
  w: readonly number[],
  o: Parameters<typeof convAttrs>[0],
  bias = false,
): Geometry => ({ name, x, w, a: convAttrs(o), bias });

export const GEOMETRIES: readonly Geometry[] = [
  geo("3x3 stride 1 pad 0", [2, 3, 6, 5], [4, 3, 3, 3], {}),
  geo("3x3 stride 1 pad 1 with bias", [2, 2, 5, 5], [3, 2, 3, 3], { padding: 1 }, true),
  geo("3x3 stride 2 pad 1", [2, 2, 7, 6], [3, 2, 3, 3], { stride: 2, padding: 1 }),
  geo("3x3 stride 2 pad 0 (drops a row)", [1, 2, 6, 6], [2, 2, 3, 3], { stride: 2 }),
  geo("1x1", [2, 3, 4, 4], [5, 3, 1, 1], {}),
  geo("1x1 stride 2", [1, 2, 5, 8], [3, 2, 1, 1], { stride: 2 }),
  geo("1x1 pad 1 (pad beyond the kernel)", [1, 2, 3, 3], [2, 2, 1, 1], { padding: 1 }),
  geo("3x3 asymmetric pads [1,0,2,1]", [1, 2, 5, 6], [2, 2, 3, 3], { padding: [1, 0, 2, 1] }),
  geo("3x3 asymmetric pads stride 2", [1, 2, 6, 7], [2, 2, 3, 3], { stride: 2, padding: [0, 1, 1, 0] }),
  geo("3x3 dilation 2 pad 2", [1, 2, 7, 7], [3, 2, 3, 3], { dilation: 2, padding: 2 }),
  geo("3x3 groups 2 pad 1", [2, 4, 5, 5], [6, 2, 3, 3], { groups: 2, padding: 1 }, true),
  geo("3x3 depthwise (groups = channels)", [1, 3, 5, 5], [3, 1, 3, 3], { groups: 3, padding: 1 }),
  geo("3x3 groups 2 stride 2 dilation 2", [1, 4, 9, 8], [4, 2, 3, 3], {
    groups: 2,
    stride: 2,
    dilation: 2,
    padding: 1,
  }),
  geo("2x3 kernel, non-square stride [2,1] pad [1,0]", [1, 3, 6, 7], [2, 3, 2, 3], {
    stride: [2, 1],
    padding: [1, 0],
  }),
  geo("3x1 kernel on a 1-wide image", [2, 2, 5, 1], [2, 2, 3, 1], { padding: [1, 0] }),
  // channels in whole blocks of 8: on an AVX2 CPU conv and the input gradient's Conv run as ONNX
  // Runtime's blocked (NCHWc) kernel with the weights reordered in the graph (src/onnx/nchwc.ts)
  geo("3x3 pad 1, 8 → 8 channels, with bias", [2, 8, 4, 5], [8, 8, 3, 3], { padding: 1 }, true),
  geo("3x3 stride 2 pad 1, 16 → 8 channels", [1, 16, 5, 5], [8, 16, 3, 3], { stride: 2, padding: 1 }),
  geo("3x3 dilation 2 pad 2, 8 → 16 channels", [1, 8, 6, 6], [16, 8, 3, 3], { dilation: 2, padding: 2 }),
  // fewer than 8 input channels: blocked output from a plain input; output channels padded to a block
  geo(
    "3x3 pad 1, 1 → 8 channels (plain input, blocked output)",
    [2, 1, 5, 6],
    [8, 1, 3, 3],
    { padding: 1 },
    true,
  ),
  geo(
    "3x3 pad 1, 8 → 3 channels (filters padded to a block)",
    [2, 8, 4, 4],
    [3, 8, 3, 3],
    { padding: 1 },
    true,
  ),
];

/** Every weight-gradient strategy (typed as a full record, so a new strategy must be listed here). */
const ALL_STRATEGIES: { [K in WeightGradStrategy]: true } = {
  auto: true,
  "im2col-matmul": true,
  "conv-batch-transposed": true,
  "gather-matmul": true,
  "gather-gemm": true,
  "split-gather": true,
};
export const STRATEGIES = Object.keys(ALL_STRATEGIES) as WeightGradStrategy[];

/** Whether the convTranspose lowering takes its Conv fast path for this geometry (see lowering.ts). */
export function convTransposeFastPath(g: Geometry): boolean {
  const full = [g.a.dilations[0] * (g.w[2]! - 1), g.a.dilations[1] * (g.w[3]! - 1)];
  const flipped = [
    full[0]! - g.a.pads[0],
    full[1]! - g.a.pads[1],
    full[0]! - g.a.pads[2],
    full[1]! - g.a.pads[3],
  ];
  return (
    g.a.strides[0] === 1 &&
    g.a.strides[1] === 1 &&
    g.a.group === 1 &&
    g.x[1]! >= 8 &&
    flipped.every((p) => p >= 0)
  );
}

export const convCases: { [K in ConvPrim]: OpCase[] } = {
  conv: GEOMETRIES.map((g) => ({
    name: `conv ${g.name}`,
    args: { x: { shape: g.x }, w: { shape: g.w }, ...(g.bias ? { b: { shape: [g.w[0]!] } } : {}) },
    build: (t, gr) => gr.apply("conv", g.bias ? [t["x"]!, t["w"]!, t["b"]!] : [t["x"]!, t["w"]!], g.a),
  })),
  convTranspose: GEOMETRIES.map((g) => ({
    name: `convTranspose ${g.name} (${convTransposeFastPath(g) ? "Conv fast path" : "ConvTranspose"})`,
    args: { g: { shape: convOutShape(g.x, g.w, g.a) }, w: { shape: g.w } },
    build: (t, gr) => gr.apply("convTranspose", [t["g"]!, t["w"]!], { ...g.a, outShape: g.x }),
  })),
  // under the default passes ("auto"); conv-strategies.test.ts runs each case under every strategy
  convWeightGrad: GEOMETRIES.map(weightGradCase),
};

/** The weight gradient of one geometry (the graph that computes it is a pass: onnx/passes/weight-grad.ts). */
export function weightGradCase(g: Geometry): OpCase {
  return {
    name: `convWeightGrad ${g.name}`,
    args: { x: { shape: g.x }, g: { shape: convOutShape(g.x, g.w, g.a) } },
    build: (t, gr) => gr.apply("convWeightGrad", [t["x"]!, t["g"]!], { ...g.a, wShape: g.w }),
  };
}
