/**
 * The traced operations: thin, shape-checked constructors over the primitives, plus the few
 * compositions that autodiff itself needs (mean, unbroadcast). Numbers stand for scalar constants of
 * the other operand's dtype. Layers built on these live in `nn/`.
 */
import { formatShape, sameShape } from "./host.ts";
import { type ConvAttrs, normAxis, ShapeError } from "./primitives.ts";
import {
  add,
  cast,
  div,
  exp,
  liftOperands as lift,
  log,
  matmul,
  max,
  mean,
  mul,
  neg,
  type Operand,
  reshape,
  sqrt,
  sub,
  sum,
  type Tensor,
  transpose,
  uniformValue,
} from "./symbolic.ts";

// the ops behind Tensor's methods live beside the class (symbolic.ts)
export {
  add,
  cast,
  div,
  exp,
  log,
  matmul,
  max,
  mean,
  mul,
  neg,
  reshape,
  sqrt,
  sub,
  sum,
  transpose,
  uniformValue,
};

export const maximum = (a: Operand, b: Operand): Tensor => {
  const [x, y] = lift(a, b, "maximum");
  return x.graph.apply("maximum", [x, y], {});
};
export const minimum = (a: Operand, b: Operand): Tensor => {
  const [x, y] = lift(a, b, "minimum");
  return x.graph.apply("minimum", [x, y], {});
};
export const less = (a: Operand, b: Operand): Tensor => {
  const [x, y] = lift(a, b, "less");
  return x.graph.apply("less", [x, y], {});
};
export const greater = (a: Operand, b: Operand): Tensor => {
  const [x, y] = lift(a, b, "greater");
  return x.graph.apply("greater", [x, y], {});
};
export const equal = (a: Operand, b: Operand): Tensor => {
  const [x, y] = lift(a, b, "equal");
  return x.graph.apply("equal", [x, y], {});
};
export const where = (cond: Tensor, a: Operand, b: Operand): Tensor => {
  const [x, y] = lift(a, b, "where");
  return cond.graph.apply("where", [cond, x, y], {});
};

export const tanh = (x: Tensor): Tensor => x.graph.apply("tanh", [x], {});
export const sigmoid = (x: Tensor): Tensor => x.graph.apply("sigmoid", [x], {});
/** x·sigmoid(x), one primitive: its gradient needs fewer passes than the composite's. */
export const silu = (x: Tensor): Tensor => x.graph.apply("silu", [x], {});
/** x·Φ(x) = ½x(1 + erf(x/√2)) (GELU, exact form), one primitive. */
export const gelu = (x: Tensor): Tensor => x.graph.apply("gelu", [x], {});
/** ½x(1 + tanh(√(2/π)(x + 0.044715x³))) (GELU, tanh form), one primitive. */
export const geluTanh = (x: Tensor): Tensor => x.graph.apply("geluTanh", [x], {});
export const erf = (x: Tensor): Tensor => x.graph.apply("erf", [x], {});
export const sin = (x: Tensor): Tensor => x.graph.apply("sin", [x], {});
export const cos = (x: Tensor): Tensor => x.graph.apply("cos", [x], {});
export const abs = (x: Tensor): Tensor => x.graph.apply("abs", [x], {});
export const square = (x: Tensor): Tensor => mul(x, x);
/** 1/√x */
export const rsqrt = (x: Tensor): Tensor => div(1, sqrt(x));
/** Broadcasts x to `shape` (NumPy rules). */
export function expand(x: Tensor, shape: readonly number[]): Tensor {
  if (sameShape(shape, x.shape)) return x;
  return x.graph.apply("expand", [x], { shape });
}

/** x[start:end:step] along one axis. */
export function slice(x: Tensor, axis: number, start: number, end: number, step = 1): Tensor {
  const ax = normAxis("slice", axis, x.rank);
  if (start === 0 && end === x.shape[ax] && step === 1) return x;
  return x.graph.apply("slice", [x], { starts: [start], ends: [end], axes: [ax], steps: [step] });
}

/** Zero padding; `pads` in ONNX order: all begins, then all ends. */
export function pad(x: Tensor, pads: readonly number[]): Tensor {
  if (pads.every((p) => p === 0)) return x;
  return x.graph.apply("pad", [x], { pads });
}

export function concat(xs: readonly Tensor[], axis: number): Tensor {
  if (xs.length === 0) throw new Error("concat: needs at least one tensor");
  if (xs.length === 1) return xs[0]!;
  return xs[0]!.graph.apply("concat", xs, { axis });
}

/** Splits along an axis into pieces of the given sizes (or `n` equal pieces). */
export function split(x: Tensor, axis: number, sizes: number | readonly number[]): Tensor[] {
  const ax = normAxis("split", axis, x.rank);
  const d = x.shape[ax]!;
  const list = typeof sizes === "number" ? Array.from({ length: sizes }, () => d / sizes) : sizes;
  if (list.some((s) => !Number.isInteger(s) || s <= 0) || list.reduce((p, q) => p + q, 0) !== d) {
    throw new ShapeError(
      `split: sizes ${formatShape(list)} do not partition axis ${axis} of ${formatShape(x.shape)}`,
    );
  }
  let at = 0;
  return list.map((s) => {
    const piece = slice(x, ax, at, at + s);
    at += s;
    return piece;
  });
}

/** Rows of `table` picked by integer `indices` along `axis`. */
export function gather(table: Tensor, indices: Tensor, axis = 0): Tensor {
  const ax = normAxis("gather", axis, table.rank);
  if (ax === 0) return table.graph.apply("gather", [table, indices], {});
  // Move the axis to the front, gather rows, move the gathered axes back.
  const perm = [ax, ...table.shape.map((_, i) => i).filter((i) => i !== ax)];
  const rows = table.graph.apply("gather", [transpose(table, perm), indices], {}); // [...I, rest]
  const k = indices.rank;
  const rest = table.rank - 1;
  const back = [
    ...Array.from({ length: ax }, (_, i) => k + i),
    ...Array.from({ length: k }, (_, i) => i),
    ...Array.from({ length: rest - ax }, (_, i) => k + ax + i),
  ];
  return transpose(rows, back);
}

/** zeros(shape) with `updates` added at rows `indices` (the gradient of gather along axis 0). */
export const scatterAdd = (indices: Tensor, updates: Tensor, shape: readonly number[]): Tensor =>
  indices.graph.apply("scatterAdd", [indices, updates], { shape });

export interface Conv2dOptions {
  stride?: number | readonly [number, number];
  /** A number, [ph, pw] (symmetric), or [top, left, bottom, right]. */
  padding?: number | readonly [number, number] | readonly [number, number, number, number];
  dilation?: number | readonly [number, number];
  groups?: number;
}

function pair(v: number | readonly [number, number] | undefined, dflt: number): [number, number] {
  if (v === undefined) return [dflt, dflt];
  return typeof v === "number" ? [v, v] : [v[0], v[1]];
}

export function convAttrs(o: Conv2dOptions = {}): ConvAttrs {
  const p = o.padding ?? 0;
  const pads: [number, number, number, number] =
    typeof p === "number"
      ? [p, p, p, p]
      : p.length === 2
        ? [p[0], p[1], p[0], p[1]]
        : [p[0], p[1], p[2], p[3]];
  return { strides: pair(o.stride, 1), pads, dilations: pair(o.dilation, 1), group: o.groups ?? 1 };
}

/** 2-D convolution (cross-correlation, as PyTorch): x [N,C,H,W], w [O,C/g,kH,kW], optional bias [O]. */
export function conv2d(x: Tensor, w: Tensor, bias?: Tensor, o: Conv2dOptions = {}): Tensor {
  return x.graph.apply("conv", bias ? [x, w, bias] : [x, w], convAttrs(o));
}

export const convTranspose = (g: Tensor, w: Tensor, a: ConvAttrs, outShape: readonly number[]): Tensor =>
  g.graph.apply("convTranspose", [g, w], { ...a, outShape });

export const convWeightGrad = (x: Tensor, g: Tensor, a: ConvAttrs, wShape: readonly number[]): Tensor =>
  x.graph.apply("convWeightGrad", [x, g], { ...a, wShape });

export const softmax = (x: Tensor, axis = -1): Tensor =>
  x.graph.apply("softmax", [x], { axis: normAxis("softmax", axis, x.rank) });

/** (x − mean) / √(var + eps) over the axes from `axis` to the last (biased variance). */
export const standardize = (x: Tensor, axis: number, eps: number): Tensor =>
  x.graph.apply("standardize", [x], { axis: normAxis("standardize", axis, x.rank), eps });

/** 1/√(var + eps) over the axes from `axis` to the last, those axes kept with size 1. */
export const invStdDev = (x: Tensor, axis: number, eps: number): Tensor =>
  x.graph.apply("invStdDev", [x], { axis: normAxis("invStdDev", axis, x.rank), eps });

/** Nearest-neighbour upsampling of [N, C, H, W] by an integer factor. */
export const upsampleNearest = (x: Tensor, scale: number): Tensor =>
  x.graph.apply("upsampleNearest", [x], { scale });

/** Sums `g` over the axes that broadcasting stretched, so it has `shape` again. */
export function unbroadcast(g: Tensor, shape: readonly number[]): Tensor {
  const lead = g.rank - shape.length;
  const axes: number[] = [];
  for (let i = 0; i < g.rank; i++) {
    const d = i < lead ? 1 : shape[i - lead]!;
    if (i < lead || (d === 1 && g.shape[i] !== 1)) axes.push(i);
  }
  return reshape(sum(g, axes, true), shape);
}

/** conv2d with ready-made attributes (used by gradient rules). */
export const conv2dRaw = (x: Tensor, w: Tensor, a: ConvAttrs): Tensor => x.graph.apply("conv", [x, w], a);
