/**
 * Symbolic tensors and the graph they are traced into.
 *
 * Model code calls ordinary-looking functions on `Tensor`s; each call checks shapes, appends one
 * primitive node to the tensor's `Graph` and returns the result tensor. Nothing is computed here: a
 * graph is later lowered to ONNX (`onnx/`) and run by ONNX Runtime (`runtime/`). Autodiff
 * (`autodiff.ts`) appends the backward nodes to the same graph.
 *
 * The few ops that `Tensor`'s methods stand for (arithmetic, reductions, reshape, transpose, cast)
 * are defined here, at the end; `ops.ts` re-exports them beside the others, so this file needs
 * nothing from `ops.ts` (which needs the types of this one).
 */
import { type DType, formatShape, HostTensor, sameShape, sizeOf } from "./host.ts";
import {
  broadcastShapes,
  normAxis,
  type PrimAttrs,
  type PrimName,
  ShapeError,
  shapeRules,
} from "./primitives.ts";

export interface Node<K extends PrimName = PrimName> {
  readonly prim: K;
  readonly inputs: readonly Tensor[];
  readonly attrs: PrimAttrs[K];
  readonly output: Tensor;
}

export type Operand = Tensor | number;

export class Graph {
  readonly nodes: Node[] = [];
  readonly inputs: Tensor[] = [];
  readonly constants = new Map<number, HostTensor>();
  private readonly producers = new Map<number, Node>();
  private readonly inputNames = new Set<string>();
  private readonly scalarCache = new Map<string, Tensor>();
  private nextId = 0;

  /** Declares a graph input (a parameter, a batch, a timestep…). */
  input(name: string, shape: readonly number[], dtype: DType = "float32"): Tensor {
    if (this.inputNames.has(name)) throw new Error(`graph input "${name}" is declared twice`);
    this.inputNames.add(name);
    const t = new Tensor(this, this.nextId++, shape, dtype, name);
    this.inputs.push(t);
    return t;
  }

  /** A constant tensor embedded in the graph. */
  constant(value: HostTensor): Tensor {
    const t = new Tensor(this, this.nextId++, value.shape, value.dtype);
    this.constants.set(t.id, value);
    return t;
  }

  /** A scalar constant of the given dtype (shared between uses). */
  scalar(value: number, dtype: DType = "float32"): Tensor {
    const key = `${dtype}:${Object.is(value, -0) ? "-0" : value}`;
    let t = this.scalarCache.get(key);
    if (!t) {
      const host =
        dtype === "float32"
          ? new HostTensor(Float32Array.of(value), [])
          : dtype === "int64"
            ? new HostTensor(BigInt64Array.of(BigInt(value)), [])
            : dtype === "int32"
              ? new HostTensor(Int32Array.of(value), [])
              : new HostTensor(Uint8Array.of(value ? 1 : 0), []);
      t = this.constant(host);
      this.scalarCache.set(key, t);
    }
    return t;
  }

  /** Appends one primitive node; shapes are checked by the primitive's shape rule. */
  apply<K extends PrimName>(prim: K, inputs: readonly Tensor[], attrs: PrimAttrs[K]): Tensor {
    for (const x of inputs) {
      if (x.graph !== this) throw new Error(`${prim}: operands come from different graphs`);
    }
    const rule = shapeRules[prim] as (
      xs: readonly Tensor[],
      a: PrimAttrs[K],
    ) => { shape: number[]; dtype: DType };
    const { shape, dtype } = rule(inputs, attrs);
    const output = new Tensor(this, this.nextId++, shape, dtype);
    const node: Node<K> = { prim, inputs, attrs, output };
    this.nodes.push(node as unknown as Node);
    this.producers.set(output.id, node as unknown as Node);
    return output;
  }

  /** The node that computed `t`, or undefined for inputs and constants. */
  producer(t: Tensor): Node | undefined {
    return this.producers.get(t.id);
  }
}

/** A symbolic tensor: a value in a graph, with a static shape and dtype. */
export class Tensor {
  readonly shape: readonly number[];

  constructor(
    readonly graph: Graph,
    readonly id: number,
    shape: readonly number[],
    readonly dtype: DType,
    /** Set for graph inputs. */
    readonly inputName?: string,
  ) {
    this.shape = [...shape];
  }

  get rank(): number {
    return this.shape.length;
  }

  get size(): number {
    let n = 1;
    for (const d of this.shape) n *= d;
    return n;
  }

  toString(): string {
    return `Tensor(${formatShape(this.shape)}, ${this.dtype})`;
  }

  add(y: Operand): Tensor {
    return add(this, y);
  }
  sub(y: Operand): Tensor {
    return sub(this, y);
  }
  mul(y: Operand): Tensor {
    return mul(this, y);
  }
  div(y: Operand): Tensor {
    return div(this, y);
  }
  neg(): Tensor {
    return neg(this);
  }
  square(): Tensor {
    return mul(this, this);
  }
  sqrt(): Tensor {
    return sqrt(this);
  }
  exp(): Tensor {
    return exp(this);
  }
  log(): Tensor {
    return log(this);
  }
  matmul(y: Tensor): Tensor {
    return matmul(this, y);
  }
  reshape(shape: readonly number[]): Tensor {
    return reshape(this, shape);
  }
  transpose(perm: readonly number[]): Tensor {
    return transpose(this, perm);
  }
  sum(axes?: number | readonly number[], keepDims = false): Tensor {
    return sum(this, axes, keepDims);
  }
  mean(axes?: number | readonly number[], keepDims = false): Tensor {
    return mean(this, axes, keepDims);
  }
  max(axes?: number | readonly number[], keepDims = false): Tensor {
    return max(this, axes, keepDims);
  }
  cast(to: DType): Tensor {
    return cast(this, to);
  }
}

// ---- the ops behind Tensor's methods (re-exported by ops.ts) ----

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

/** Both operands as tensors (a number becomes a scalar constant of the other's dtype). */
export { lift as liftOperands };

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
export const neg = (x: Tensor): Tensor => x.graph.apply("neg", [x], {});
export const exp = (x: Tensor): Tensor => x.graph.apply("exp", [x], {});
export const log = (x: Tensor): Tensor => x.graph.apply("log", [x], {});
export const sqrt = (x: Tensor): Tensor => x.graph.apply("sqrt", [x], {});
export const matmul = (a: Tensor, b: Tensor): Tensor => a.graph.apply("matmul", [a, b], {});
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
