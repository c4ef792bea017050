/**
 * ONNX lowerings: for each primitive, the ONNX nodes that compute it (opset 17). The table is typed
 * `{ [K in PrimName]: ... }`, so a primitive without a lowering does not compile.
 *
 * Most primitives map to one ONNX operator. The convolution gradients are where the speed is: the
 * input gradient runs as a Conv with flipped, transposed weights where it can (faster than
 * ConvTranspose in ONNX Runtime), and the weight gradient by one of several measured graphs; both
 * live in `conv-grad.ts`. The passes an emission applies (passes/options.ts) reach the lowerings
 * in `LowerCtx.passes`: blocked convolutions ("nchwc"), the weight-gradient graph.
 */
import type { ConvAttrs, PrimName } from "../tensor/primitives.ts";
import type { Node } from "../tensor/symbolic.ts";
import type { LowerCtx } from "./context.ts";
import { lowerConvTranspose, lowerWeightGrad } from "./conv-grad.ts";
import { blockedConv, canBlock } from "./passes/nchwc.ts";
import { ONNX_DTYPE, type OnnxAttr } from "./proto.ts";

export const OPSET = 17;

type Lowering<K extends PrimName> = (node: Node<K>, c: LowerCtx) => void;

const ints = (value: readonly number[]): OnnxAttr => ({ kind: "ints", value });
const int = (value: number): OnnxAttr => ({ kind: "int", value });

const simple =
  (opType: string) =>
  (_n: Node, c: LowerCtx): void =>
    c.emit(opType, c.ins, [c.out]);

function convAttrs(a: ConvAttrs): Record<string, OnnxAttr> {
  return { strides: ints(a.strides), pads: ints(a.pads), dilations: ints(a.dilations), group: int(a.group) };
}

export const lowerings: { [K in PrimName]: Lowering<K> } = {
  add: simple("Add"),
  sub: simple("Sub"),
  mul: simple("Mul"),
  div: simple("Div"),
  maximum: simple("Max"),
  minimum: simple("Min"),
  less: simple("Less"),
  greater: simple("Greater"),
  equal: simple("Equal"),
  where: simple("Where"),
  neg: simple("Neg"),
  exp: simple("Exp"),
  log: simple("Log"),
  sqrt: simple("Sqrt"),
  tanh: simple("Tanh"),
  sigmoid: simple("Sigmoid"),
  silu: (_n, c) => {
    // ONNX Runtime fuses the pair into one kernel (QuickGelu) where the sigmoid has no other use
    const s = c.tmp("sigmoid");
    c.emit("Sigmoid", [c.ins[0]!], [s]);
    c.emit("Mul", [c.ins[0]!, s], [c.out]);
  },
  // one fused kernel each (ONNX Runtime's Gelu and FastGelu, com.microsoft) instead of the composed
  // formulas' five to eight elementwise passes over the tensor
  gelu: (n, c) => contribUnary("Gelu", n, c),
  geluTanh: (n, c) => contribUnary("FastGelu", n, c),
  erf: simple("Erf"),
  sin: simple("Sin"),
  cos: simple("Cos"),
  abs: simple("Abs"),
  cast: (n, c) => c.emit("Cast", c.ins, [c.out], { to: int(ONNX_DTYPE[n.attrs.to]) }),
  sum: (n, c) =>
    c.emit("ReduceSum", [c.ins[0]!, c.i64(n.attrs.axes)], [c.out], {
      keepdims: int(n.attrs.keepDims ? 1 : 0),
    }),
  max: (n, c) =>
    c.emit("ReduceMax", c.ins, [c.out], {
      axes: ints(n.attrs.axes),
      keepdims: int(n.attrs.keepDims ? 1 : 0),
    }),
  // allowzero: a 0 in the target is a 0, not ONNX's default "copy this dimension from the input"
  reshape: (n, c) => c.emit("Reshape", [c.ins[0]!, c.i64(n.attrs.shape)], [c.out], { allowzero: int(1) }),
  transpose: (n, c) => c.emit("Transpose", c.ins, [c.out], { perm: ints(n.attrs.perm) }),
  expand: (n, c) => c.emit("Expand", [c.ins[0]!, c.i64(n.attrs.shape)], [c.out]),
  slice: (n, c) =>
    c.emit(
      "Slice",
      [c.ins[0]!, c.i64(n.attrs.starts), c.i64(n.attrs.ends), c.i64(n.attrs.axes), c.i64(n.attrs.steps)],
      [c.out],
    ),
  pad: (n, c) =>
    c.emit("Pad", [c.ins[0]!, c.i64(n.attrs.pads)], [c.out], { mode: { kind: "string", value: "constant" } }),
  concat: (n, c) => c.emit("Concat", c.ins, [c.out], { axis: int(n.attrs.axis) }),
  gather: (_n, c) => c.emit("Gather", c.ins, [c.out], { axis: int(0) }),
  scatterAdd: (n, c) => {
    const zeros = c.tmp("zeros");
    // the zeros take the updates' dtype (ScatterND needs both to match)
    const dtype = n.output.dtype;
    const zero =
      dtype === "int64" ? BigInt64Array.of(0n) : dtype === "int32" ? Int32Array.of(0) : Float32Array.of(0);
    c.emit("ConstantOfShape", [c.i64(n.attrs.shape)], [zeros], {
      value: { kind: "tensor", value: { name: "zero", dtype, dims: [1], data: zero } },
    });
    const idx = c.tmp("idx");
    const idxShape = n.inputs[0]!.shape;
    c.emit("Reshape", [c.ins[0]!, c.i64([...idxShape, 1])], [idx]);
    c.emit("ScatterND", [zeros, idx, c.ins[1]!], [c.out], { reduction: { kind: "string", value: "add" } });
  },
  matmul: simple("MatMul"),
  conv: (n, c) => {
    const w = n.inputs[1]!.shape;
    if (n.attrs.group === 1 && w.length === 4 && canBlock(c, w[1]!, w[0]!))
      blockedConv(c, c.ins[0]!, c.ins[1]!, w, n.attrs, c.out, c.ins[2]);
    else c.emit("Conv", c.ins, [c.out], convAttrs(n.attrs));
  },
  convTranspose: lowerConvTranspose,
  convWeightGrad: lowerWeightGrad,
  softmax: (n, c) => c.emit("Softmax", c.ins, [c.out], { axis: int(n.attrs.axis) }),
  // LayerNormalization with unit scale and no bias: one fused pass instead of five
  // (both emit the same three-output node, so ONNX Runtime's common subexpression elimination
  // computes a standardize and its gradient's invStdDev in one pass)
  standardize: (n, c) => layerNorm(n, c, [c.out, "", c.tmp("inv_std")]),
  invStdDev: (n, c) => layerNorm(n, c, [c.tmp("standardized"), "", c.out]),
  upsampleNearest: (n, c) => {
    const [b, ch, h, w] = n.inputs[0]!.shape as [number, number, number, number];
    const s = n.attrs.scale;
    c.emit("Resize", [c.ins[0]!, "", "", c.i64([b, ch, h * s, w * s])], [c.out], {
      mode: { kind: "string", value: "nearest" },
      coordinate_transformation_mode: { kind: "string", value: "asymmetric" },
      nearest_mode: { kind: "string", value: "floor" },
    });
  },
};

/** A com.microsoft elementwise kernel, which wants a tensor of rank ≥ 1: a scalar goes through as [1]. */
function contribUnary(op: string, n: Node, c: LowerCtx): void {
  if (n.inputs[0]!.shape.length > 0) {
    c.emit(op, [c.ins[0]!], [c.out], {}, "com.microsoft");
    return;
  }
  const [x1, y1] = [c.tmp(`${op}_in`), c.tmp(`${op}_out`)];
  c.emit("Reshape", [c.ins[0]!, c.i64([1])], [x1]);
  c.emit(op, [x1], [y1], {}, "com.microsoft");
  c.emit("Reshape", [y1, c.i64([])], [c.out]);
}

function layerNorm(n: Node<"standardize" | "invStdDev">, c: LowerCtx, outs: readonly string[]): void {
  const ones = c.tmp("ones");
  c.emit("ConstantOfShape", [c.i64(n.inputs[0]!.shape.slice(n.attrs.axis))], [ones], {
    value: {
      kind: "tensor",
      value: { name: "one", dtype: "float32", dims: [1], data: Float32Array.of(1) },
    },
  });
  c.emit("LayerNormalization", [c.ins[0]!, ones], outs, {
    axis: int(n.attrs.axis),
    epsilon: { kind: "float", value: n.attrs.eps },
  });
}
