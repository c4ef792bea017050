/**
 * The traced operations: thin, shape-checked constructors over the primitives, plus the few
 * compositions that autodiff itself needs (mean, unbroadcast). Numbers stand for scalar constants of
 * the other operand's dtype. Layers built on these live in `nn/`.
 */
import { type DType, formatShape, sameShape, sizeOf } from "./host.ts";
import {
  broadcastShapes,
  type ConvAttrs,
  normAxis,
  ShapeError,
  type WeightGradStrategy,
} from "./primitives.ts";
import type { Operand, Tensor } from "./symbolic.ts";

function lift(a: Operand, b: Operand, op: string): [Tensor, Tensor] {
  if (typeof a === "number" && typeof b === "number")
    throw new Error(`${op}: at least one operand must be a tensor`);
  if (typeof a === "number") {
    const tb = b as Tensor;
    return [tb.graph.scalar(a, tb.dtype), tb];
  }
  if (typeof b === "number") return [a, a.graph.scalar(b, a.dtype)];
  return [a, b];
}

/**
 * The one value of a constant that holds a single number (a scalar constant, possibly reshaped or
 * broadcast), else undefined.
 */
export function uniformValue(t: Tensor): number | undefined {
  const c = t.graph.constants.get(t.id);
  if (c) return c.data.length === 1 ? Number(c.data[0]) : undefined;
  const p = t.graph.producer(t);
  return p && (p.prim === "reshape" || p.prim === "expand") ? uniformValue(p.inputs[0]!) : undefined;
}

/**
 * The operands of an elementwise op with broadcasts that the op's own broadcasting makes redundant
 * taken off: an `expand` of x whose input broadcasts against y to the same result is not
 * materialized (autodiff's seeds and sum gradients are such expands).
 */
function unexpand(op: string, x: Tensor, y: Tensor): [Tensor, Tensor, number[]] {
  const out = broadcastShapes(op, x.shape, y.shape);
  const strip = (t: Tensor, other: Tensor): Tensor => {
    const p = t.graph.producer(t);
    if (p?.prim !== "expand") return t;
    const inner = p.inputs[0]!;
    return sameShape(broadcastShapes(op, inner.shape, other.shape), out) ? strip(inner, other) : t;
  };
  const x2 = strip(x, y);
  return [x2, strip(y, x2), out];
}

/** x + y, x − y, x·y or x / y; x·1, 1·y, x + 0, 0 + y, x − 0 and x / 1 return the other operand. */
function arith(op: "add" | "sub" | "mul" | "div", a: Operand, b: Operand): Tensor {
  const [x0, y0] = lift(a, b, op);
  if (x0.dtype !== y0.dtype || x0.dtype === "bool") return x0.graph.apply(op, [x0, y0], {});
  const [x, y, out] = unexpand(op, x0, y0);
  const identity = op === "add" || op === "sub" ? 0 : 1;
  if (uniformValue(y) === identity && sameShape(x.shape, out)) return x;
  if ((op === "add" || op === "mul") && uniformValue(x) === identity && sameShape(y.shape, out)) return y;
  return x.graph.apply(op, [x, y], {});
}

export const add = (a: Operand, b: Operand): Tensor => arith("add", a, b);
export const sub = (a: Operand, b: Operand): Tensor => arith("sub", a, b);
export const mul = (a: Operand, b: Operand): Tensor => arith("mul", a, b);
export const div = (a: Operand, b: Operand): Tensor => arith("div", a, b);
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

export const neg = (x: Tensor): Tensor => x.graph.apply("neg", [x], {});
export const exp = (x: Tensor): Tensor => x.graph.apply("exp", [x], {});
export const log = (x: Tensor): Tensor => x.graph.apply("log", [x], {});
export const sqrt = (x: Tensor): Tensor => x.graph.apply("sqrt", [x], {});
export const tanh = (x: Tensor): Tensor => x.graph.apply("tanh", [x], {});
export const sigmoid = (x: Tensor): Tensor => x.graph.apply("sigmoid", [x], {});
/** x·sigmoid(x), one primitive: its gradient needs fewer passes than the composite's. */
export const silu = (x: Tensor): Tensor => x.graph.apply("silu", [x], {});
export const erf = (x: Tensor): Tensor => x.graph.apply("erf", [x], {});
export const sin = (x: Tensor): Tensor => x.graph.apply("sin", [x], {});
export const cos = (x: Tensor): Tensor => x.graph.apply("cos", [x], {});
export const abs = (x: Tensor): Tensor => x.graph.apply("abs", [x], {});
export const square = (x: Tensor): Tensor => mul(x, x);
/** 1/√x */
export const rsqrt = (x: Tensor): Tensor => div(1, sqrt(x));
export const cast = (x: Tensor, to: DType): Tensor =>
  x.dtype === to ? x : x.graph.apply("cast", [x], { to });

function axesOf(op: string, x: Tensor, axes: number | readonly number[] | undefined): number[] {
  if (axes === undefined) return x.shape.map((_, i) => i);
  const list = typeof axes === "number" ? [axes] : axes;
  return list.map((a) => normAxis(op, a, x.rank));
}

export function sum(x: Tensor, axes?: number | readonly number[], keepDims = false): Tensor {
  const ax = axesOf("sum", x, axes);
  if (ax.length === 0) return x;
  return x.graph.apply("sum", [x], { axes: ax, keepDims });
}

export function mean(x: Tensor, axes?: number | readonly number[], keepDims = false): Tensor {
  const ax = axesOf("mean", x, axes);
  let n = 1;
  for (const a of ax) n *= x.shape[a]!;
  return div(sum(x, ax, keepDims), n);
}

export function max(x: Tensor, axes?: number | readonly number[], keepDims = false): Tensor {
  const ax = axesOf("max", x, axes);
  if (ax.length === 0) return x;
  return x.graph.apply("max", [x], { axes: ax, keepDims });
}

/** Reshape; one dimension may be -1 (inferred). */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  const free = shape.filter((d) => d === -1).length;
  let target = [...shape];
  if (free > 1) throw new ShapeError(`reshape: at most one -1 allowed in ${formatShape(shape)}`);
  if (free === 1) {
    const known = sizeOf(shape.filter((d) => d !== -1));
    if (known === 0 || x.size % known !== 0) {
      throw new ShapeError(`reshape: cannot reshape ${formatShape(x.shape)} to ${formatShape(shape)}`);
    }
    target = shape.map((d) => (d === -1 ? x.size / known : d));
  }
  if (sameShape(target, x.shape)) return x;
  return x.graph.apply("reshape", [x], { shape: target });
}

export function transpose(x: Tensor, perm: readonly number[]): Tensor {
  if (perm.every((p, i) => p === i) && perm.length === x.rank) return x;
  return x.graph.apply("transpose", [x], { perm });
}

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

export const matmul = (a: Tensor, b: Tensor): Tensor => a.graph.apply("matmul", [a, b], {});

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

export const convWeightGrad = (
  x: Tensor,
  g: Tensor,
  a: ConvAttrs,
  wShape: readonly number[],
  strategy: WeightGradStrategy = "auto",
): Tensor => x.graph.apply("convWeightGrad", [x, g], { ...a, wShape, strategy });

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
