/**
 * The "convWeightGrad" and "weightGradSlices" passes: which graph (conv-grad.ts) computes each
 * convolution's weight gradient, and whether its columns are built a batch slice at a time.
 *
 * "auto" picks by shape from measurements on a 2-core machine (`npm run bench -- conv-grad`; the
 * tables are in docs/benchmarks.md, "Convolution weight gradients"). The rule: 1×1 kernels and few
 * input channels (C·kh·kw < 32) keep the plain per-sample product; output images of ≤ 16×16
 * (Ho·Wo ≤ 256) gather the columns into one product; larger stride-1 convolutions whose output
 * channels are few (≤ 32), fewer than the input's, or equal to them at ≤ 64 split the taps; the rest
 * gather the columns with one product per sample. conv-batch-transposed was never the fastest.
 */
import type { ConvAttrs, PrimAttrs } from "../../tensor/primitives.ts";
import type { Node } from "../../tensor/symbolic.ts";
import type { ConcreteWeightGrad, WeightGradChoice } from "./options.ts";

/** Shapes of one group's weight gradient: x [N, C, H, W], g [N, O, Ho, Wo], kernel kh × kw. */
export interface Dims {
  N: number;
  C: number;
  H: number;
  W: number;
  O: number;
  Ho: number;
  Wo: number;
  kh: number;
  kw: number;
}

/** The measured-fastest weight-gradient graph for a shape ("auto"). */
export function weightGradStrategy(
  a: PrimAttrs["convWeightGrad"],
  xShape: readonly number[],
): ConcreteWeightGrad {
  const [O, C, kh, kw] = a.wShape as [number, number, number, number];
  const og = O / a.group;
  const [H, W] = [xShape[2]!, xShape[3]!];
  const Ho = Math.floor((H + a.pads[0] + a.pads[2] - a.dilations[0] * (kh - 1) - 1) / a.strides[0]) + 1;
  const Wo = Math.floor((W + a.pads[1] + a.pads[3] - a.dilations[1] * (kw - 1) - 1) / a.strides[1]) + 1;
  if (kh * kw === 1 || C * kh * kw < 32) return "im2col-matmul";
  if (Ho * Wo <= 256) return "gather-gemm";
  const stride1 = a.strides[0] === 1 && a.strides[1] === 1;
  if (stride1 && (og <= 32 || og < C || (og <= 64 && og === C))) return "split-gather";
  return "gather-matmul";
}

/** The graph the pass's setting gives one weight-gradient node. */
export function chooseWeightGrad(choice: WeightGradChoice, n: Node<"convWeightGrad">): ConcreteWeightGrad {
  const s = typeof choice === "function" ? choice(n) : choice;
  return s === "auto" ? weightGradStrategy(n.attrs, n.inputs[0]!.shape) : s;
}

/** Bytes of the columns (the operands built for the product) a strategy lays out for a whole batch. */
function columnBytes(strategy: ConcreteWeightGrad, d: Dims, a: ConvAttrs): number {
  switch (strategy) {
    case "conv-batch-transposed":
      return 0;
    case "split-gather": {
      const Wp = d.W + a.pads[1] + a.pads[3];
      return 4 * d.Ho * d.N * Wp * (d.C * d.kh + d.kw * d.O);
    }
    default:
      return 4 * d.N * d.Ho * d.Wo * d.kh * d.kw * d.C;
  }
}

/**
 * Columns above this size are built one slice of the batch at a time (the partial products summed):
 * the first weight gradients of a backward pass run while the forward pass's activations are all
 * still kept, so their columns set a train step's peak memory (docs/benchmarks.md).
 */
export const COLUMN_SLICE_BYTES = 8 * 2 ** 20;

/** Slices of the batch for a weight gradient: the fewest that divide N and keep each slice's columns ≤ COLUMN_SLICE_BYTES. */
export function batchChunks(strategy: ConcreteWeightGrad, d: Dims, a: ConvAttrs): number {
  const bytes = columnBytes(strategy, d, a);
  for (let k = 1; k <= d.N; k++) if (d.N % k === 0 && bytes / k <= COLUMN_SLICE_BYTES) return k;
  return d.N;
}
