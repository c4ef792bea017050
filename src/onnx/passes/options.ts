/**
 * The named, opt-in rewrites an emission (graph → ONNX, emit.ts) may apply for speed on a CPU. Each
 * computes the same values as the plain lowering; the caller that emits or compiles a graph says
 * which to apply (`EmitOptions.passes`, `compileGraph(…, { passes })`), and whatever it leaves unset
 * takes `defaultPasses(target)` — the set every graph has been compiled with so far.
 *
 *   pass               what it does                                          file
 *   nchwc              convolutions through ONNX Runtime's blocked kernel    passes/nchwc.ts
 *   keepBlocked        activations stay blocked between convolutions         passes/nchwc-layout.ts
 *   convWeightGrad     which graph computes a convolution's weight gradient  passes/weight-grad.ts
 *   weightGradSlices   large weight-gradient columns built a batch slice at  passes/weight-grad.ts
 *                      a time
 *   fuseGroupNorm      inference group norms as one scale-and-shift pass     passes/fuse-groupnorm.ts
 *
 * The backward pass has rewrites of its own (group-norm gradient fusion, recomputation), chosen
 * where the backward graph is built: `grad(…, { passes })` (tensor/backward.ts). The measurements
 * behind each default are in docs/benchmarks.md.
 */
import type { Node } from "../../tensor/symbolic.ts";

/** The graphs that can compute a convolution's weight gradient (conv-grad.ts). */
export type ConcreteWeightGrad =
  | "conv-batch-transposed"
  | "im2col-matmul"
  | "gather-matmul"
  | "gather-gemm"
  | "split-gather";

/** A weight-gradient graph, or "auto": the measured-fastest for the shape (passes/weight-grad.ts). */
export type WeightGradStrategy = "auto" | ConcreteWeightGrad;

/** One strategy for every weight gradient, or one chosen per node. */
export type WeightGradChoice = WeightGradStrategy | ((node: Node<"convWeightGrad">) => WeightGradStrategy);

/** The device a graph is emitted for; it picks the default passes. */
export type Target = "cpu" | "gpu";

export interface EmitPasses {
  /**
   * ONNX Runtime's NCHWc channel block: convolutions run in the blocked layout where they can. 0:
   * off (the default: the block is the CPU's, so `compileGraph` asks ONNX Runtime for it).
   */
  nchwc: number;
  /**
   * With `nchwc`: keep activations blocked between convolutions. "inference" (default): in graphs
   * without a backward pass through a convolution or a group norm, whose gradients read the forward
   * values in the plain layout.
   */
  keepBlocked: boolean | "inference";
  /** Which graph computes each convolution's weight gradient (default "auto"). */
  convWeightGrad: WeightGradChoice;
  /** Build weight-gradient columns over COLUMN_SLICE_BYTES one batch slice at a time (default: CPU). */
  weightGradSlices: boolean;
  /** Inference group norms as statistics plus one scale-and-shift pass (default: CPU). */
  fuseGroupNorm: boolean;
}

/**
 * Today's passes for a target. On a GPU the weight gradients' batch slices (joined by an n-ary Sum,
 * which WebGPU runs on the CPU) and the one-pass group norm (fourteen small kernels where the traced
 * form has three) only cost time.
 */
export function defaultPasses(target: Target = "cpu"): EmitPasses {
  const cpu = target === "cpu";
  return {
    nchwc: 0,
    keepBlocked: "inference",
    convWeightGrad: "auto",
    weightGradSlices: cpu,
    fuseGroupNorm: cpu,
  };
}

/** Every pass off: the plain lowering of each primitive (weight gradients by im2col and one product). */
export const NO_PASSES: Readonly<EmitPasses> = {
  nchwc: 0,
  keepBlocked: false,
  convWeightGrad: "im2col-matmul",
  weightGradSlices: false,
  fuseGroupNorm: false,
};
