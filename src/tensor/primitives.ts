/**
 * The primitive operations of the engine: a small, closed set, each with a shape rule here, an ONNX
 * lowering (`onnx/lowering.ts`) and a gradient rule (`grad-rules.ts`). Both of those tables are typed
 * `{ [K in PrimName]: ... }`, so a primitive that lacks a lowering or a gradient does not compile.
 * Everything else (linear layers, norms, attention, losses) is composed from these in `nn/`.
 *
 * Broadcasting follows NumPy: shapes are aligned on the right, a dimension of 1 stretches.
 */
import { type DType, formatShape, sameShape, sizeOf } from "./host.ts";

type Empty = Record<string, never>;

export interface ConvAttrs {
  /** [sh, sw] */
  strides: readonly [number, number];
  /** ONNX order [top, left, bottom, right] */
  pads: readonly [number, number, number, number];
  /** [dh, dw] */
  dilations: readonly [number, number];
  group: number;
}

export interface PrimAttrs {
  // elementwise, broadcasting
  add: Empty;
  sub: Empty;
  mul: Empty;
  div: Empty;
  maximum: Empty;
  minimum: Empty;
  less: Empty;
  greater: Empty;
  equal: Empty;
  where: Empty;
  // elementwise unary
  neg: Empty;
  exp: Empty;
  log: Empty;
  sqrt: Empty;
  tanh: Empty;
  sigmoid: Empty;
  /** x·sigmoid(x) (fused: its gradient reuses the forward values). */
  silu: Empty;
  /**
   * x·Φ(x) = ½x(1 + erf(x/√2)): the exact GELU, one kernel. Its gradient reads x alone, where the
   * composed formula's reads its intermediate values, which a train step then keeps from the forward
   * pass to the backward (docs/benchmarks.md, LoRA fine-tuning).
   */
  gelu: Empty;
  /** ½x(1 + tanh(√(2/π)(x + 0.044715x³))): the tanh-approximated GELU, one kernel. */
  geluTanh: Empty;
  erf: Empty;
  sin: Empty;
  cos: Empty;
  abs: Empty;
  cast: { to: DType };
  // reductions
  sum: { axes: readonly number[]; keepDims: boolean };
  max: { axes: readonly number[]; keepDims: boolean };
  // movement
  reshape: { shape: readonly number[] };
  transpose: { perm: readonly number[] };
  expand: { shape: readonly number[] };
  slice: {
    starts: readonly number[];
    ends: readonly number[];
    axes: readonly number[];
    steps: readonly number[];
  };
  pad: { pads: readonly number[] };
  concat: { axis: number };
  /** Rows of input 0 picked along axis 0 by integer input 1 (other axes: compose with transpose). */
  gather: Empty;
  scatterAdd: { shape: readonly number[] };
  // linear algebra
  matmul: Empty;
  conv: ConvAttrs;
  convTranspose: ConvAttrs & { outShape: readonly number[] };
  /** The weight gradient of conv (which ONNX graph computes it is the lowering's choice: onnx/passes). */
  convWeightGrad: ConvAttrs & { wShape: readonly number[] };
  // fused
  softmax: { axis: number };
  /** (x − mean) / √(var + eps) over the axes from `axis` to the last (fused: ONNX LayerNormalization). */
  standardize: { axis: number; eps: number };
  /** 1/√(var + eps) over the axes from `axis` on, kept as size-1 axes (standardize's scale factor). */
  invStdDev: { axis: number; eps: number };
  /** Nearest-neighbour upsampling of an [N, C, H, W] tensor by an integer factor (ONNX Resize). */
  upsampleNearest: { scale: number };
}

export type PrimName = keyof PrimAttrs;

export interface ShapeAndType {
  shape: number[];
  dtype: DType;
}

export interface InputInfo {
  readonly shape: readonly number[];
  readonly dtype: DType;
}

/** Thrown at trace time; the message names the op and the shapes involved. */
export class ShapeError extends Error {
  override name = "ShapeError";
}

function fail(op: string, msg: string): never {
  throw new ShapeError(`${op}: ${msg}`);
}

export function broadcastShapes(op: string, a: readonly number[], b: readonly number[]): number[] {
  const n = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const da = a[a.length - n + i] ?? 1;
    const db = b[b.length - n + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) {
      fail(
        op,
        `cannot broadcast shapes ${formatShape(a)} and ${formatShape(b)} (dimension ${i - n}: ${da} vs ${db})`,
      );
    }
    out.push(da === 1 ? db : da);
  }
  return out;
}

/** Normalizes a possibly negative axis against a rank. */
export function normAxis(op: string, axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  if (!Number.isInteger(a) || a < 0 || a >= rank) fail(op, `axis ${axis} is out of range for rank ${rank}`);
  return a;
}

function sameDtype(op: string, xs: readonly InputInfo[]): DType {
  const d = xs[0]!.dtype;
  for (const x of xs)
    if (x.dtype !== d) fail(op, `operands have different dtypes ${xs.map((y) => y.dtype).join(", ")}`);
  return d;
}

function numeric(op: string, x: InputInfo): void {
  if (x.dtype === "bool") fail(op, "needs a numeric operand, got bool");
}

function floating(op: string, x: InputInfo): void {
  if (x.dtype !== "float32") fail(op, `needs a float32 operand, got ${x.dtype}`);
}

function binary(op: string, xs: readonly InputInfo[]): ShapeAndType {
  const [a, b] = xs as [InputInfo, InputInfo];
  const dtype = sameDtype(op, xs);
  numeric(op, a);
  return { shape: broadcastShapes(op, a.shape, b.shape), dtype };
}

function compare(op: string, xs: readonly InputInfo[]): ShapeAndType {
  return { shape: binary(op, xs).shape, dtype: "bool" };
}

function unaryFloat(op: string, xs: readonly InputInfo[]): ShapeAndType {
  const x = xs[0]!;
  floating(op, x);
  return { shape: [...x.shape], dtype: x.dtype };
}

function reduce(op: string, x: InputInfo, axes: readonly number[], keepDims: boolean): ShapeAndType {
  // ONNX reduces over every axis when given none, so the empty list is refused (ops.sum returns x)
  if (axes.length === 0) fail(op, `no axes given for ${formatShape(x.shape)} (reducing over none is x)`);
  const set = new Set(axes.map((a) => normAxis(op, a, x.shape.length)));
  if (set.size !== axes.length) fail(op, `repeated axes ${formatShape(axes)}`);
  const shape: number[] = [];
  x.shape.forEach((d, i) => {
    if (!set.has(i)) shape.push(d);
    else if (keepDims) shape.push(1);
  });
  return { shape, dtype: x.dtype };
}

function convOut(op: string, x: InputInfo, wShape: readonly number[], a: ConvAttrs): number[] {
  if (x.shape.length !== 4) fail(op, `input must be [N, C, H, W], got ${formatShape(x.shape)}`);
  if (wShape.length !== 4) fail(op, `weight must be [O, I/groups, kH, kW], got ${formatShape(wShape)}`);
  const [n, c, h, w] = x.shape as [number, number, number, number];
  const [o, ig, kh, kw] = wShape as [number, number, number, number];
  if (c % a.group !== 0 || o % a.group !== 0)
    fail(op, `channels ${c} -> ${o} are not divisible by groups ${a.group}`);
  if (ig * a.group !== c) {
    fail(
      op,
      `input ${formatShape(x.shape)} has ${c} channels but weight ${formatShape(wShape)} expects ${ig * a.group}`,
    );
  }
  const oh = Math.floor((h + a.pads[0] + a.pads[2] - a.dilations[0] * (kh - 1) - 1) / a.strides[0]) + 1;
  const ow = Math.floor((w + a.pads[1] + a.pads[3] - a.dilations[1] * (kw - 1) - 1) / a.strides[1]) + 1;
  if (oh <= 0 || ow <= 0) fail(op, `kernel ${kh}x${kw} does not fit input ${formatShape(x.shape)}`);
  return [n, o, oh, ow];
}

/** Shape and dtype rules; they also validate attributes and throw ShapeError with a clear message. */
/** The input of standardize / invStdDev, its axis and eps checked. */
function normInput(op: string, xs: readonly InputInfo[], a: { axis: number; eps: number }): InputInfo {
  const x = xs[0]!;
  floating(op, x);
  if (normAxis(op, a.axis, x.shape.length) !== a.axis) fail(op, `axis must be non-negative, got ${a.axis}`);
  if (!(a.eps >= 0)) fail(op, `eps must be >= 0, got ${a.eps}`);
  return x;
}

export const shapeRules: {
  [K in PrimName]: (xs: readonly InputInfo[], attrs: PrimAttrs[K]) => ShapeAndType;
} = {
  add: (xs) => binary("add", xs),
  sub: (xs) => binary("sub", xs),
  mul: (xs) => binary("mul", xs),
  div: (xs) => binary("div", xs),
  maximum: (xs) => binary("maximum", xs),
  minimum: (xs) => binary("minimum", xs),
  less: (xs) => compare("less", xs),
  greater: (xs) => compare("greater", xs),
  equal: (xs) => compare("equal", xs),
  where: (xs) => {
    const [c, a, b] = xs as [InputInfo, InputInfo, InputInfo];
    if (c.dtype !== "bool") fail("where", `condition must be bool, got ${c.dtype}`);
    const dtype = sameDtype("where", [a, b]);
    numeric("where", a); // ONNX Runtime has no Where kernel for bool operands
    return { shape: broadcastShapes("where", broadcastShapes("where", c.shape, a.shape), b.shape), dtype };
  },
  neg: (xs) => {
    numeric("neg", xs[0]!);
    return { shape: [...xs[0]!.shape], dtype: xs[0]!.dtype };
  },
  exp: (xs) => unaryFloat("exp", xs),
  log: (xs) => unaryFloat("log", xs),
  sqrt: (xs) => unaryFloat("sqrt", xs),
  tanh: (xs) => unaryFloat("tanh", xs),
  sigmoid: (xs) => unaryFloat("sigmoid", xs),
  silu: (xs) => unaryFloat("silu", xs),
  gelu: (xs) => unaryFloat("gelu", xs),
  geluTanh: (xs) => unaryFloat("geluTanh", xs),
  erf: (xs) => unaryFloat("erf", xs),
  sin: (xs) => unaryFloat("sin", xs),
  cos: (xs) => unaryFloat("cos", xs),
  abs: (xs) => unaryFloat("abs", xs),
  cast: (xs, a) => ({ shape: [...xs[0]!.shape], dtype: a.to }),
  sum: (xs, a) => {
    numeric("sum", xs[0]!);
    return reduce("sum", xs[0]!, a.axes, a.keepDims);
  },
  max: (xs, a) => {
    numeric("max", xs[0]!);
    return reduce("max", xs[0]!, a.axes, a.keepDims);
  },
  reshape: (xs, a) => {
    const x = xs[0]!;
    if (a.shape.some((d) => !Number.isInteger(d) || d < 0))
      fail("reshape", `invalid target ${formatShape(a.shape)}`);
    if (sizeOf(a.shape) !== sizeOf(x.shape)) {
      fail(
        "reshape",
        `cannot reshape ${formatShape(x.shape)} (${sizeOf(x.shape)} elements) to ${formatShape(a.shape)}`,
      );
    }
    return { shape: [...a.shape], dtype: x.dtype };
  },
  transpose: (xs, a) => {
    const x = xs[0]!;
    const r = x.shape.length;
    const sorted = [...a.perm].sort((p, q) => p - q);
    if (a.perm.length !== r || sorted.some((p, i) => p !== i)) {
      fail(
        "transpose",
        `perm ${formatShape(a.perm)} is not a permutation of the axes of ${formatShape(x.shape)}`,
      );
    }
    return { shape: a.perm.map((p) => x.shape[p]!), dtype: x.dtype };
  },
  expand: (xs, a) => {
    const x = xs[0]!;
    const out = broadcastShapes("expand", x.shape, a.shape);
    if (out.length !== a.shape.length || out.some((d, i) => d !== a.shape[i])) {
      fail("expand", `cannot expand ${formatShape(x.shape)} to ${formatShape(a.shape)}`);
    }
    return { shape: out, dtype: x.dtype };
  },
  slice: (xs, a) => {
    const x = xs[0]!;
    const shape = [...x.shape];
    a.axes.forEach((ax, i) => {
      const k = normAxis("slice", ax, x.shape.length);
      const d = x.shape[k]!;
      const s = a.starts[i]!;
      const e = a.ends[i]!;
      const st = a.steps[i] ?? 1;
      if (st < 1 || s < 0 || e > d || s > e) {
        fail("slice", `range ${s}:${e}:${st} on axis ${ax} is outside ${formatShape(x.shape)}`);
      }
      shape[k] = Math.ceil((e - s) / st);
    });
    return { shape, dtype: x.dtype };
  },
  pad: (xs, a) => {
    const x = xs[0]!;
    const r = x.shape.length;
    if (a.pads.length !== 2 * r || a.pads.some((p) => p < 0 || !Number.isInteger(p))) {
      fail(
        "pad",
        `pads ${formatShape(a.pads)} must be ${2 * r} non-negative integers for ${formatShape(x.shape)}`,
      );
    }
    return { shape: x.shape.map((d, i) => d + a.pads[i]! + a.pads[i + r]!), dtype: x.dtype };
  },
  concat: (xs, a) => {
    const first = xs[0]!;
    const ax = normAxis("concat", a.axis, first.shape.length);
    const dtype = sameDtype("concat", xs);
    const shape = [...first.shape];
    shape[ax] = 0;
    for (const x of xs) {
      if (x.shape.length !== first.shape.length || x.shape.some((d, i) => i !== ax && d !== first.shape[i])) {
        fail(
          "concat",
          `shapes ${xs.map((y) => formatShape(y.shape)).join(", ")} differ outside axis ${a.axis}`,
        );
      }
      shape[ax]! += x.shape[ax]!;
    }
    return { shape, dtype };
  },
  gather: (xs) => {
    const [x, idx] = xs as [InputInfo, InputInfo];
    if (idx.dtype !== "int64") fail("gather", `indices must be int64, got ${idx.dtype}`);
    if (x.shape.length === 0) fail("gather", "cannot gather from a scalar");
    return { shape: [...idx.shape, ...x.shape.slice(1)], dtype: x.dtype };
  },
  scatterAdd: (xs, a) => {
    const [idx, upd] = xs as [InputInfo, InputInfo];
    if (idx.dtype !== "int64") fail("scatterAdd", `indices must be int64, got ${idx.dtype}`);
    const want = [...idx.shape, ...a.shape.slice(1)];
    if (!sameShape(upd.shape, want)) {
      fail("scatterAdd", `updates ${formatShape(upd.shape)} must be ${formatShape(want)}`);
    }
    return { shape: [...a.shape], dtype: upd.dtype };
  },
  matmul: (xs) => {
    const [a, b] = xs as [InputInfo, InputInfo];
    const dtype = sameDtype("matmul", xs);
    if (a.shape.length < 2 || b.shape.length < 2) {
      fail("matmul", `operands must have rank >= 2, got ${formatShape(a.shape)} and ${formatShape(b.shape)}`);
    }
    const [m, k] = a.shape.slice(-2) as [number, number];
    const [k2, n] = b.shape.slice(-2) as [number, number];
    if (k !== k2)
      fail("matmul", `inner dimensions differ: ${formatShape(a.shape)} @ ${formatShape(b.shape)}`);
    let batch: number[];
    try {
      batch = broadcastShapes("matmul", a.shape.slice(0, -2), b.shape.slice(0, -2));
    } catch {
      fail("matmul", `batch dimensions do not broadcast: ${formatShape(a.shape)} @ ${formatShape(b.shape)}`);
    }
    return { shape: [...batch, m, n], dtype };
  },
  conv: (xs, a) => {
    floating("conv", xs[0]!);
    const w = xs[1]!;
    const out = convOut("conv", xs[0]!, w.shape, a);
    const b = xs[2];
    if (b && (b.shape.length !== 1 || b.shape[0] !== w.shape[0])) {
      fail("conv", `bias ${formatShape(b.shape)} must be [${w.shape[0]}]`);
    }
    return { shape: out, dtype: "float32" };
  },
  convTranspose: (xs, a) => {
    // y = convTranspose(g, w) is the input gradient of conv(x, w) with x of shape outShape.
    const [g, w] = xs as [InputInfo, InputInfo];
    const fwd = convOut("convTranspose", { shape: a.outShape, dtype: "float32" }, w.shape, a);
    if (fwd.some((d, i) => d !== g.shape[i])) {
      fail(
        "convTranspose",
        `gradient ${formatShape(g.shape)} does not match conv output ${formatShape(fwd)}`,
      );
    }
    return { shape: [...a.outShape], dtype: "float32" };
  },
  convWeightGrad: (xs, a) => {
    // dW = convWeightGrad(x, g): the weight gradient of conv(x, w) with w of shape wShape.
    const [x, g] = xs as [InputInfo, InputInfo];
    const fwd = convOut("convWeightGrad", x, a.wShape, a);
    if (fwd.some((d, i) => d !== g.shape[i])) {
      fail(
        "convWeightGrad",
        `gradient ${formatShape(g.shape)} does not match conv output ${formatShape(fwd)}`,
      );
    }
    return { shape: [...a.wShape], dtype: "float32" };
  },
  softmax: (xs, a) => {
    const x = xs[0]!;
    floating("softmax", x);
    normAxis("softmax", a.axis, x.shape.length);
    return { shape: [...x.shape], dtype: x.dtype };
  },
  standardize: (xs, a) => {
    const x = normInput("standardize", xs, a);
    return { shape: [...x.shape], dtype: x.dtype };
  },
  invStdDev: (xs, a) => {
    const x = normInput("invStdDev", xs, a);
    return { shape: x.shape.map((d, i) => (i < a.axis ? d : 1)), dtype: x.dtype };
  },
  upsampleNearest: (xs, a) => {
    const x = xs[0]!;
    floating("upsampleNearest", x);
    if (x.shape.length !== 4)
      fail("upsampleNearest", `expects an [N, C, H, W] tensor, got ${formatShape(x.shape)}`);
    if (!Number.isInteger(a.scale) || a.scale < 1)
      fail("upsampleNearest", `scale must be a positive integer, got ${a.scale}`);
    const [n, c, h, w] = x.shape as [number, number, number, number];
    return { shape: [n, c, h * a.scale, w * a.scale], dtype: x.dtype };
  },
};
