/**
 * A plain-TypeScript float64 reference for every primitive of `src/tensor/primitives.ts`, and an
 * interpreter that evaluates a traced `Graph` with it. Tests compare ONNX Runtime against this
 * (round trips) and differentiate it numerically (finite-difference gradient checks), so it is
 * written from the definitions (NumPy broadcasting, the ONNX operator semantics) and shares no code
 * with the engine beyond the `Graph` data structure and the attribute types.
 *
 * The table is typed `{ [K in PrimName]: ... }`: a new primitive without a reference does not compile.
 */

import type { DType } from "../../src/tensor/host.ts";
import type { PrimAttrs, PrimName } from "../../src/tensor/primitives.ts";
import type { Graph, Tensor } from "../../src/tensor/symbolic.ts";
import { refConv, refConvTranspose, refConvWeightGrad } from "./ref-conv.ts";
import { fromHost, type RefTensor, refZeros, stridesOf } from "./ref-core.ts";

export { fromHost, type RefTensor, refTensor, refZeros, stridesOf, toHost } from "./ref-core.ts";

const size = (shape: readonly number[]): number => shape.reduce((p, d) => p * d, 1);
const fmt = (shape: readonly number[]): string => `[${shape.join(", ")}]`;

/** NumPy broadcasting of several shapes. */
export function refBroadcastShape(shapes: readonly (readonly number[])[]): number[] {
  const n = Math.max(0, ...shapes.map((s) => s.length));
  const out = new Array<number>(n).fill(1);
  for (const s of shapes) {
    for (let i = 0; i < s.length; i++) {
      const k = n - s.length + i;
      const d = s[i]!;
      if (out[k] === 1) out[k] = d;
      else if (d !== 1 && d !== out[k]) throw new Error(`ref: cannot broadcast ${shapes.map(fmt).join(" ")}`);
    }
  }
  return out;
}

/** For each output offset, the offset in an input broadcast to `outShape`. */
function broadcastOffsets(inShape: readonly number[], outShape: readonly number[]): Int32Array {
  const lead = outShape.length - inShape.length;
  const inStrides = stridesOf(inShape);
  const outStrides = stridesOf(outShape);
  const offs = new Int32Array(size(outShape));
  for (let k = 0; k < offs.length; k++) {
    let off = 0;
    for (let ax = lead; ax < outShape.length; ax++) {
      const i = Math.floor(k / outStrides[ax]!) % outShape[ax]!;
      if (inShape[ax - lead] !== 1) off += i * inStrides[ax - lead]!;
    }
    offs[k] = off;
  }
  return offs;
}

function elementwise(xs: readonly RefTensor[], dtype: DType, f: (v: readonly number[]) => number): RefTensor {
  const shape = refBroadcastShape(xs.map((x) => x.shape));
  const out = refZeros(shape, dtype);
  const v = new Array<number>(xs.length).fill(0);
  if (xs.every((x) => x.data.length === out.data.length)) {
    // no broadcasting (same sizes imply the same shapes once broadcasting succeeded)
    for (let k = 0; k < out.data.length; k++) {
      for (let j = 0; j < xs.length; j++) v[j] = xs[j]!.data[k]!;
      out.data[k] = f(v);
    }
    return out;
  }
  const offs = xs.map((x) => broadcastOffsets(x.shape, shape));
  for (let k = 0; k < out.data.length; k++) {
    for (let j = 0; j < xs.length; j++) v[j] = xs[j]!.data[offs[j]![k]!]!;
    out.data[k] = f(v);
  }
  return out;
}

const binary = (f: (a: number, b: number, dtype: DType) => number) => (xs: readonly RefTensor[]) =>
  elementwise(xs, xs[0]!.dtype, (v) => f(v[0]!, v[1]!, xs[0]!.dtype));
const compare = (f: (a: number, b: number) => boolean) => (xs: readonly RefTensor[]) =>
  elementwise(xs, "bool", (v) => (f(v[0]!, v[1]!) ? 1 : 0));
const unary = (f: (a: number) => number) => (xs: readonly RefTensor[]) =>
  elementwise(xs, xs[0]!.dtype, (v) => f(v[0]!));

/** erf in float64: the Maclaurin series for |x| < 2.5, the continued fraction of erfc beyond. */
export function erf(x: number): number {
  const ax = Math.abs(x);
  if (ax < 2.5) {
    let term = x; // (−1)ⁿ x^(2n+1) / n!
    let sum = x;
    for (let n = 1; n < 100; n++) {
      term *= (-x * x) / n;
      const t = term / (2 * n + 1);
      sum += t;
      if (Math.abs(t) < 1e-17 * Math.abs(sum)) break;
    }
    return (2 / Math.sqrt(Math.PI)) * sum;
  }
  // erfc(x) = e^{−x²}/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + …))))
  let f = ax;
  for (let k = 200; k >= 1; k--) f = ax + k / 2 / f;
  const erfc = Math.exp(-ax * ax) / (Math.sqrt(Math.PI) * f);
  return Math.sign(x) * (1 - erfc);
}

function castValue(v: number, to: DType): number {
  if (to === "bool") return v !== 0 ? 1 : 0;
  if (to === "float32") return v;
  return Math.trunc(v); // float → integer truncates toward zero (C semantics, as ONNX Runtime)
}

function reduce(
  x: RefTensor,
  axes: readonly number[],
  keepDims: boolean,
  init: number,
  f: (acc: number, v: number) => number,
): RefTensor {
  const r = x.shape.length;
  const set = new Set(axes.map((a) => (a < 0 ? a + r : a)));
  const keepShape = x.shape.map((d, i) => (set.has(i) ? 1 : d));
  const outShape = keepDims ? keepShape : x.shape.filter((_, i) => !set.has(i));
  const out = refZeros(outShape, x.dtype);
  out.data.fill(init);
  const offs = broadcastOffsets(keepShape, x.shape);
  for (let k = 0; k < x.data.length; k++) out.data[offs[k]!] = f(out.data[offs[k]!]!, x.data[k]!);
  return out;
}

/** Visits every multi-index of `shape` in row-major order. */
function forEachIndex(shape: readonly number[], visit: (idx: readonly number[], flat: number) => void): void {
  const idx = new Array<number>(shape.length).fill(0);
  const n = size(shape);
  for (let k = 0; k < n; k++) {
    visit(idx, k);
    for (let ax = shape.length - 1; ax >= 0; ax--) {
      if (++idx[ax]! < shape[ax]!) break;
      idx[ax] = 0;
    }
  }
}

function offsetOf(idx: readonly number[], strides: readonly number[]): number {
  let off = 0;
  for (let i = 0; i < idx.length; i++) off += idx[i]! * strides[i]!;
  return off;
}

function matmul(a: RefTensor, b: RefTensor): RefTensor {
  const [m, k] = a.shape.slice(-2) as [number, number];
  const [k2, n] = b.shape.slice(-2) as [number, number];
  if (k !== k2) throw new Error(`ref matmul: ${fmt(a.shape)} @ ${fmt(b.shape)}`);
  const batch = refBroadcastShape([a.shape.slice(0, -2), b.shape.slice(0, -2)]);
  const aOff = broadcastOffsets(a.shape.slice(0, -2), batch);
  const bOff = broadcastOffsets(b.shape.slice(0, -2), batch);
  const out = refZeros([...batch, m, n], a.dtype);
  for (let t = 0; t < size(batch); t++) {
    const pa = aOff[t]! * m * k;
    const pb = bOff[t]! * k * n;
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let q = 0; q < k; q++) s += a.data[pa + i * k + q]! * b.data[pb + q * n + j]!;
        out.data[(t * m + i) * n + j] = s;
      }
    }
  }
  return out;
}

function rowIndex(v: number, rows: number): number {
  const r = v < 0 ? v + rows : v;
  if (!Number.isInteger(r) || r < 0 || r >= rows)
    throw new Error(`ref: index ${v} out of range for ${rows} rows`);
  return r;
}

type RefPrim<K extends PrimName> = (xs: readonly RefTensor[], attrs: PrimAttrs[K]) => RefTensor;

/** x − mean and the biased variance over the axes from `axis` on (kept as size-1 axes). */
function moments(x: RefTensor, axis: number): { xc: RefTensor; variance: RefTensor } {
  const axes = x.shape.map((_, i) => i).filter((i) => i >= axis);
  const n = axes.reduce((p, i) => p * x.shape[i]!, 1);
  const sum = (t: RefTensor) => reduce(t, axes, true, 0, (p, v) => p + v);
  const mu = elementwise([sum(x)], x.dtype, (v) => v[0]! / n);
  const xc = elementwise([x, mu], x.dtype, (v) => v[0]! - v[1]!);
  const variance = elementwise(
    [sum(elementwise([xc], x.dtype, (v) => v[0]! * v[0]!))],
    x.dtype,
    (v) => v[0]! / n,
  );
  return { xc, variance };
}

export const refPrims: { [K in PrimName]: RefPrim<K> } = {
  add: binary((a, b) => a + b),
  sub: binary((a, b) => a - b),
  mul: binary((a, b) => a * b),
  div: binary((a, b, dtype) => (dtype === "float32" ? a / b : Math.trunc(a / b))),
  maximum: binary((a, b) => Math.max(a, b)),
  minimum: binary((a, b) => Math.min(a, b)),
  less: compare((a, b) => a < b),
  greater: compare((a, b) => a > b),
  equal: compare((a, b) => a === b),
  where: (xs) => elementwise(xs, xs[1]!.dtype, (v) => (v[0] ? v[1]! : v[2]!)),
  neg: unary((a) => -a),
  exp: unary(Math.exp),
  log: unary(Math.log),
  sqrt: unary(Math.sqrt),
  tanh: unary(Math.tanh),
  sigmoid: unary((a) => 1 / (1 + Math.exp(-a))),
  silu: unary((a) => a / (1 + Math.exp(-a))),
  gelu: unary((a) => 0.5 * a * (1 + erf(a / Math.SQRT2))),
  geluTanh: unary((a) => 0.5 * a * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (a + 0.044715 * a ** 3)))),
  erf: unary(erf),
  sin: unary(Math.sin),
  cos: unary(Math.cos),
  abs: unary(Math.abs),
  cast: (xs, a) => elementwise(xs, a.to, (v) => castValue(v[0]!, a.to)),
  sum: (xs, a) => reduce(xs[0]!, a.axes, a.keepDims, 0, (s, v) => s + v),
  max: (xs, a) => reduce(xs[0]!, a.axes, a.keepDims, Number.NEGATIVE_INFINITY, Math.max),
  reshape: (xs, a) => {
    const x = xs[0]!;
    if (size(a.shape) !== x.data.length) throw new Error(`ref reshape: ${fmt(x.shape)} to ${fmt(a.shape)}`);
    return { data: x.data.slice(), shape: [...a.shape], dtype: x.dtype };
  },
  transpose: (xs, a) => {
    const x = xs[0]!;
    const inStrides = stridesOf(x.shape);
    const out = refZeros(
      a.perm.map((p) => x.shape[p]!),
      x.dtype,
    );
    const permStrides = a.perm.map((p) => inStrides[p]!); // out axis i walks input axis perm[i]
    forEachIndex(out.shape, (idx, k) => {
      out.data[k] = x.data[offsetOf(idx, permStrides)]!;
    });
    return out;
  },
  expand: (xs, a) => {
    const x = xs[0]!;
    const shape = refBroadcastShape([x.shape, a.shape]);
    return elementwise([x, refZeros(shape, x.dtype)], x.dtype, (v) => v[0]!);
  },
  slice: (xs, a) => {
    const x = xs[0]!;
    const r = x.shape.length;
    const start = new Array<number>(r).fill(0);
    const step = new Array<number>(r).fill(1);
    const shape = [...x.shape];
    a.axes.forEach((axis, i) => {
      const ax = axis < 0 ? axis + r : axis;
      start[ax] = a.starts[i]!;
      step[ax] = a.steps[i] ?? 1;
      // indices start, start+step, … below end
      shape[ax] = Math.max(0, Math.ceil((a.ends[i]! - a.starts[i]!) / step[ax]!));
    });
    const out = refZeros(shape, x.dtype);
    const inStrides = stridesOf(x.shape);
    forEachIndex(shape, (idx, k) => {
      out.data[k] =
        x.data[
          offsetOf(
            idx.map((v, ax) => start[ax]! + v * step[ax]!),
            inStrides,
          )
        ]!;
    });
    return out;
  },
  pad: (xs, a) => {
    const x = xs[0]!;
    const r = x.shape.length;
    const out = refZeros(
      x.shape.map((d, i) => d + a.pads[i]! + a.pads[i + r]!),
      x.dtype,
    );
    const outStrides = stridesOf(out.shape);
    forEachIndex(x.shape, (idx, k) => {
      out.data[
        offsetOf(
          idx.map((v, ax) => v + a.pads[ax]!),
          outStrides,
        )
      ] = x.data[k]!;
    });
    return out;
  },
  concat: (xs, a) => {
    const r = xs[0]!.shape.length;
    const ax = a.axis < 0 ? a.axis + r : a.axis;
    const shape = [...xs[0]!.shape];
    shape[ax] = xs.reduce((s, x) => s + x.shape[ax]!, 0);
    const out = refZeros(shape, xs[0]!.dtype);
    const outStrides = stridesOf(shape);
    let at = 0;
    for (const x of xs) {
      forEachIndex(x.shape, (idx, k) => {
        out.data[
          offsetOf(
            idx.map((v, i) => (i === ax ? v + at : v)),
            outStrides,
          )
        ] = x.data[k]!;
      });
      at += x.shape[ax]!;
    }
    return out;
  },
  gather: (xs) => {
    const [table, idx] = xs as [RefTensor, RefTensor];
    const rows = table.shape[0]!;
    const row = size(table.shape.slice(1));
    const out = refZeros([...idx.shape, ...table.shape.slice(1)], table.dtype);
    idx.data.forEach((v, i) => {
      const r = rowIndex(v, rows);
      for (let j = 0; j < row; j++) out.data[i * row + j] = table.data[r * row + j]!;
    });
    return out;
  },
  scatterAdd: (xs, a) => {
    const [idx, upd] = xs as [RefTensor, RefTensor];
    const rows = a.shape[0]!;
    const row = size(a.shape.slice(1));
    const out = refZeros(a.shape, upd.dtype);
    idx.data.forEach((v, i) => {
      const r = rowIndex(v, rows);
      for (let j = 0; j < row; j++) out.data[r * row + j]! += upd.data[i * row + j]!;
    });
    return out;
  },
  matmul: (xs) => matmul(xs[0]!, xs[1]!),
  conv: (xs, a) => refConv(xs[0]!, xs[1]!, xs[2], a),
  convTranspose: (xs, a) => refConvTranspose(xs[0]!, xs[1]!, a, a.outShape),
  convWeightGrad: (xs, a) => refConvWeightGrad(xs[0]!, xs[1]!, a, a.wShape),
  softmax: (xs, a) => {
    // y = exp(x − max) / Σ exp(x − max) along the axis
    const x = xs[0]!;
    const m = reduce(x, [a.axis], true, Number.NEGATIVE_INFINITY, Math.max);
    const e = elementwise([x, m], x.dtype, (v) => Math.exp(v[0]! - v[1]!));
    const s = reduce(e, [a.axis], true, 0, (p, v) => p + v);
    return elementwise([e, s], x.dtype, (v) => v[0]! / v[1]!);
  },
  standardize: (xs, a) => {
    // (x − mean) / √(var + eps) over the axes from a.axis on, biased variance
    const { xc, variance } = moments(xs[0]!, a.axis);
    return elementwise([xc, variance], xc.dtype, (v) => v[0]! / Math.sqrt(v[1]! + a.eps));
  },
  invStdDev: (xs, a) => {
    const { variance } = moments(xs[0]!, a.axis);
    return elementwise([variance], variance.dtype, (v) => 1 / Math.sqrt(v[0]! + a.eps));
  },
  upsampleNearest: (xs, a) => {
    const x = xs[0]!;
    const [b, c, h, w] = x.shape as [number, number, number, number];
    const s = a.scale;
    const out = refZeros([b, c, h * s, w * s], x.dtype);
    forEachIndex(out.shape, (idx, k) => {
      const [i, j, y, z] = idx as [number, number, number, number];
      out.data[k] = x.data[((i * c + j) * h + Math.floor(y / s)) * w + Math.floor(z / s)]!;
    });
    return out;
  },
};

/** Applies one primitive to reference values. */
export function refApply<K extends PrimName>(
  prim: K,
  xs: readonly RefTensor[],
  attrs: PrimAttrs[K],
): RefTensor {
  return (refPrims[prim] as RefPrim<K>)(xs, attrs);
}

/**
 * Evaluates `outputs` of a traced graph in float64: inputs are looked up by name in `feeds`,
 * constants come from the graph, nodes run in graph order (only those the outputs need). Each
 * result is checked against the shape and dtype the tracer gave the node, so a wrong shape rule
 * shows up here too.
 */
export function evalGraph(
  graph: Graph,
  feeds: Readonly<Record<string, RefTensor>>,
  outputs: readonly Tensor[],
): RefTensor[] {
  return refEvaluator(graph, outputs)(feeds);
}

/**
 * `evalGraph` split in two: the graph walk (which nodes, the constants) is done once, and the
 * returned function evaluates it for any feeds — what finite differences need, thousands of times.
 */
export function refEvaluator(
  graph: Graph,
  outputs: readonly Tensor[],
): (feeds: Readonly<Record<string, RefTensor>>) => RefTensor[] {
  const needed = new Set<number>();
  const stack = [...outputs];
  while (stack.length > 0) {
    const t = stack.pop()!;
    if (needed.has(t.id)) continue;
    needed.add(t.id);
    const p = graph.producer(t);
    if (p) stack.push(...p.inputs);
  }
  const inputs = graph.inputs.filter((t) => needed.has(t.id));
  const constants = [...graph.constants]
    .filter(([id]) => needed.has(id))
    .map(([id, c]) => [id, fromHost(c)] as const);
  const nodes = graph.nodes.filter((n) => needed.has(n.output.id));
  return (feeds) => {
    const values = new Map<number, RefTensor>(constants);
    for (const t of inputs) {
      const v = feeds[t.inputName!];
      if (!v) throw new Error(`evalGraph: no feed for input "${t.inputName}"`);
      if (fmt(v.shape) !== fmt(t.shape)) {
        throw new Error(`evalGraph: feed "${t.inputName}" is ${fmt(v.shape)}, want ${fmt(t.shape)}`);
      }
      values.set(t.id, v);
    }
    for (const n of nodes) {
      const xs = n.inputs.map((t) => values.get(t.id)!);
      const y = refApply(n.prim, xs, n.attrs);
      if (
        y.shape.length !== n.output.shape.length ||
        y.shape.some((d, i) => d !== n.output.shape[i]) ||
        y.dtype !== n.output.dtype
      ) {
        throw new Error(
          `evalGraph: ${n.prim} computes ${fmt(y.shape)} ${y.dtype} but was traced as ${fmt(n.output.shape)} ${n.output.dtype}`,
        );
      }
      values.set(n.output.id, y);
    }
    return outputs.map((t) => values.get(t.id)!);
  };
}
