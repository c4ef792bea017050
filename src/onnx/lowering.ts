/**
 * ONNX lowerings: for each primitive, the ONNX nodes that compute it (opset 17). The table is typed
 * `{ [K in PrimName]: ... }`, so a primitive without a lowering does not compile.
 *
 * Most primitives map to one ONNX operator. The convolution gradients are where the speed is: the
 * input gradient runs as a Conv with flipped, transposed weights where it can (faster than
 * ConvTranspose in ONNX Runtime), and the weight gradient as im2col + MatMul or as a Conv over
 * batch-transposed tensors (see `weightGradStrategy`).
 */
import type { ConvAttrs, PrimAttrs, PrimName, WeightGradStrategy } from "../tensor/primitives.ts";
import type { Node } from "../tensor/symbolic.ts";
import { ONNX_DTYPE, type OnnxAttr } from "./proto.ts";

export const OPSET = 17;

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
}

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

/** Input gradient of a convolution: dx for y = conv(x, w), given g = dy. */
function lowerConvTranspose(n: Node<"convTranspose">, c: LowerCtx): void {
  const a = n.attrs;
  const [g, w] = c.ins as [string, string];
  const wShape = n.inputs[1]!.shape as [number, number, number, number];
  const [kh, kw] = [wShape[2], wShape[3]];
  const [H, W] = [a.outShape[2]!, a.outShape[3]!];
  const [Ho, Wo] = [n.inputs[0]!.shape[2]!, n.inputs[0]!.shape[3]!];
  const fullH = a.dilations[0] * (kh - 1);
  const fullW = a.dilations[1] * (kw - 1);
  const flippedPads = [fullH - a.pads[0], fullW - a.pads[1], fullH - a.pads[2], fullW - a.pads[3]];
  if (a.strides[0] === 1 && a.strides[1] === 1 && a.group === 1 && flippedPads.every((p) => p >= 0)) {
    // stride 1: dx = conv(g, flip(wᵀ)) with "full" padding — one Conv, faster than ConvTranspose
    const wt = c.tmp("wT");
    c.emit("Transpose", [w], [wt], { perm: ints([1, 0, 2, 3]) });
    const wf = c.tmp("wflip");
    c.emit(
      "Slice",
      [wt, c.i64([-1, -1]), c.i64([-(kh + 1), -(kw + 1)]), c.i64([2, 3]), c.i64([-1, -1])],
      [wf],
    );
    c.emit("Conv", [g, wf], [c.out], {
      strides: ints([1, 1]),
      pads: ints(flippedPads),
      dilations: ints(a.dilations),
      group: int(1),
    });
    return;
  }
  const natH = (Ho - 1) * a.strides[0] + fullH + 1 - a.pads[0] - a.pads[2];
  const natW = (Wo - 1) * a.strides[1] + fullW + 1 - a.pads[1] - a.pads[3];
  c.emit("ConvTranspose", [g, w], [c.out], { ...convAttrs(a), output_padding: ints([H - natH, W - natW]) });
}

/** Picks the weight-gradient graph for a shape (measured with `npm run bench -- engine`). */
export function weightGradStrategy(a: PrimAttrs["convWeightGrad"]): Exclude<WeightGradStrategy, "auto"> {
  if (a.strategy !== "auto") return a.strategy;
  return "im2col-matmul";
}

/** Weight gradient of one group by im2col: dW[o, c·k] = Σ_n g[n, o, :] · cols[n, c·k, :]ᵀ. */
function weightGradIm2col(
  c: LowerCtx,
  x: string,
  g: string,
  xShape: readonly number[],
  gShape: readonly number[],
  wShape: readonly number[],
  a: ConvAttrs,
  out: string,
): void {
  const [N, C] = xShape as [number, number];
  const [, O, Ho, Wo] = gShape as [number, number, number, number];
  const [, , kh, kw] = wShape as [number, number, number, number];
  let xp = x;
  if (a.pads.some((p) => p > 0)) {
    xp = c.tmp("xpad");
    c.emit("Pad", [x, c.i64([0, 0, a.pads[0], a.pads[1], 0, 0, a.pads[2], a.pads[3]])], [xp], {
      mode: { kind: "string", value: "constant" },
    });
  }
  const pieces: string[] = [];
  const hw = Ho * Wo;
  for (let i = 0; i < kh; i++) {
    for (let j = 0; j < kw; j++) {
      const s = c.tmp("col");
      const h0 = i * a.dilations[0];
      const w0 = j * a.dilations[1];
      c.emit(
        "Slice",
        [
          xp,
          c.i64([h0, w0]),
          c.i64([h0 + a.strides[0] * (Ho - 1) + 1, w0 + a.strides[1] * (Wo - 1) + 1]),
          c.i64([2, 3]),
          c.i64([a.strides[0], a.strides[1]]),
        ],
        [s],
      );
      const r = c.tmp("colr");
      c.emit("Reshape", [s, c.i64([N, C, 1, hw])], [r]);
      pieces.push(r);
    }
  }
  const stacked = c.tmp("cols");
  if (pieces.length === 1) c.emit("Identity", pieces, [stacked]);
  else c.emit("Concat", pieces, [stacked], { axis: int(2) });
  const cols = c.tmp("cols3");
  c.emit("Reshape", [stacked, c.i64([N, C * kh * kw, hw])], [cols]);
  const colsT = c.tmp("colsT");
  c.emit("Transpose", [cols], [colsT], { perm: ints([0, 2, 1]) });
  const g3 = c.tmp("g3");
  c.emit("Reshape", [g, c.i64([N, O, hw])], [g3]);
  const prod = c.tmp("dWn");
  c.emit("MatMul", [g3, colsT], [prod]);
  const dw = c.tmp("dW2");
  c.emit("ReduceSum", [prod, c.i64([0])], [dw], { keepdims: int(0) });
  c.emit("Reshape", [dw, c.i64([O, C, kh, kw])], [out]);
}

/** Weight gradient of one group as a Conv over batch-transposed tensors (the batch is the reduction). */
function weightGradBatchConv(
  c: LowerCtx,
  x: string,
  g: string,
  wShape: readonly number[],
  a: ConvAttrs,
  out: string,
  fullShape: readonly number[],
): void {
  const [, , kh, kw] = wShape as [number, number, number, number];
  const xt = c.tmp("xT");
  c.emit("Transpose", [x], [xt], { perm: ints([1, 0, 2, 3]) });
  const gt = c.tmp("gT");
  c.emit("Transpose", [g], [gt], { perm: ints([1, 0, 2, 3]) });
  const r = c.tmp("dWT");
  c.emit("Conv", [xt, gt], [r], {
    strides: ints(a.dilations),
    dilations: ints(a.strides),
    pads: ints(a.pads),
    group: int(1),
  });
  let rr = r;
  if (fullShape[2] !== kh || fullShape[3] !== kw) {
    rr = c.tmp("dWTs");
    c.emit("Slice", [r, c.i64([0, 0]), c.i64([kh, kw]), c.i64([2, 3])], [rr]);
  }
  c.emit("Transpose", [rr], [out], { perm: ints([1, 0, 2, 3]) });
}

function lowerWeightGrad(n: Node<"convWeightGrad">, c: LowerCtx): void {
  const a = n.attrs;
  const strategy = weightGradStrategy(a);
  const xShape = n.inputs[0]!.shape;
  const gShape = n.inputs[1]!.shape;
  const G = a.group;
  const [N, C, H, W] = xShape as [number, number, number, number];
  const [, O, Ho, Wo] = gShape as [number, number, number, number];
  const [, , kh, kw] = a.wShape as [number, number, number, number];
  const one = (x: string, g: string, cg: number, og: number, out: string) => {
    const wS = [og, cg, kh, kw];
    if (strategy === "im2col-matmul") weightGradIm2col(c, x, g, [N, cg, H, W], [N, og, Ho, Wo], wS, a, out);
    else {
      const fh = Math.floor((H + a.pads[0] + a.pads[2] - a.strides[0] * (Ho - 1) - 1) / a.dilations[0]) + 1;
      const fw = Math.floor((W + a.pads[1] + a.pads[3] - a.strides[1] * (Wo - 1) - 1) / a.dilations[1]) + 1;
      weightGradBatchConv(c, x, g, wS, a, out, [og, cg, fh, fw]);
    }
  };
  const [x, g] = c.ins as [string, string];
  if (G === 1) {
    one(x, g, C, O, c.out);
    return;
  }
  const cg = C / G;
  const og = O / G;
  const parts: string[] = [];
  for (let k = 0; k < G; k++) {
    const xs = c.tmp("xg");
    c.emit("Slice", [x, c.i64([k * cg]), c.i64([(k + 1) * cg]), c.i64([1])], [xs]);
    const gs = c.tmp("gg");
    c.emit("Slice", [g, c.i64([k * og]), c.i64([(k + 1) * og]), c.i64([1])], [gs]);
    const p = c.tmp("dWg");
    one(xs, gs, cg, og, p);
    parts.push(p);
  }
  c.emit("Concat", parts, [c.out], { axis: int(0) });
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
  conv: (n, c) => c.emit("Conv", c.ins, [c.out], convAttrs(n.attrs)),
  convTranspose: lowerConvTranspose,
  convWeightGrad: lowerWeightGrad,
  softmax: (n, c) => c.emit("Softmax", c.ins, [c.out], { axis: int(n.attrs.axis) }),
  standardize: (n, c) => {
    // LayerNormalization with unit scale and no bias: one fused pass instead of five
    const ones = c.tmp("ones");
    c.emit("ConstantOfShape", [c.i64(n.inputs[0]!.shape.slice(n.attrs.axis))], [ones], {
      value: {
        kind: "tensor",
        value: { name: "one", dtype: "float32", dims: [1], data: Float32Array.of(1) },
      },
    });
    c.emit("LayerNormalization", [c.ins[0]!, ones], [c.out], {
      axis: int(n.attrs.axis),
      epsilon: { kind: "float", value: n.attrs.eps },
    });
  },
};
