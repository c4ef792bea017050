/**
 * The contexts that the lowering (lowering.ts, conv-grad.ts) and the node-list passes (passes/) work
 * in, given to them by emit.ts. They live here, apart from their users, so that no lowering or pass
 * imports another for its types.
 */
import type { EmitPasses } from "./passes/options.ts";
import type { OnnxAttr } from "./proto.ts";

/** What a primitive's lowering sees: its names, and the means to add ONNX nodes and constants. */
export interface LowerCtx {
  /** ONNX names of the node's inputs. */
  readonly ins: readonly string[];
  /** ONNX name the node's result must have. */
  readonly out: string;
  emit(
    opType: string,
    inputs: readonly string[],
    outputs: readonly string[],
    attrs?: Record<string, OnnxAttr>,
    domain?: string,
  ): void;
  /** A fresh value name. */
  tmp(hint: string): string;
  /** A 1-D int64 initializer; returns its name. */
  i64(values: readonly number[]): string;
  /** A float32 scalar initializer. */
  f32(value: number): string;
  /** The passes this emission applies (passes/options.ts). */
  readonly passes: Readonly<EmitPasses>;
}

/** What a pass over the emitted node list sees. */
export interface RewriteCtx {
  /** A fresh value name. */
  tmp(hint: string): string;
  /** A 1-D int64 initializer; returns its name. */
  i64(values: readonly number[]): string;
  /** A float32 initializer; returns its name. */
  f32(dims: readonly number[], data: Float32Array): string;
  /** Shapes of the values the lowering named (primitive outputs, graph inputs, constants). */
  shape(name: string): readonly number[] | undefined;
  /** Whether the value is one of the graph's outputs (those stay as they are). */
  isOutput(name: string): boolean;
  /** The data of an initializer, if `name` is one. */
  constant(name: string): Float32Array | BigInt64Array | undefined;
}
