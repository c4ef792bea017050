/**
 * Symbolic tensors and the graph they are traced into.
 *
 * Model code calls ordinary-looking functions on `Tensor`s; each call checks shapes, appends one
 * primitive node to the tensor's `Graph` and returns the result tensor. Nothing is computed here: a
 * graph is later lowered to ONNX (`onnx/`) and run by ONNX Runtime (`runtime/`). Autodiff
 * (`autodiff.ts`) appends the backward nodes to the same graph.
 */
import { type DType, formatShape, HostTensor } from "./host.ts";
import * as ops from "./ops.ts";
import { type PrimAttrs, type PrimName, shapeRules } from "./primitives.ts";

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
    return ops.add(this, y);
  }
  sub(y: Operand): Tensor {
    return ops.sub(this, y);
  }
  mul(y: Operand): Tensor {
    return ops.mul(this, y);
  }
  div(y: Operand): Tensor {
    return ops.div(this, y);
  }
  neg(): Tensor {
    return ops.neg(this);
  }
  square(): Tensor {
    return ops.mul(this, this);
  }
  sqrt(): Tensor {
    return ops.sqrt(this);
  }
  exp(): Tensor {
    return ops.exp(this);
  }
  log(): Tensor {
    return ops.log(this);
  }
  matmul(y: Tensor): Tensor {
    return ops.matmul(this, y);
  }
  reshape(shape: readonly number[]): Tensor {
    return ops.reshape(this, shape);
  }
  transpose(perm: readonly number[]): Tensor {
    return ops.transpose(this, perm);
  }
  sum(axes?: number | readonly number[], keepDims = false): Tensor {
    return ops.sum(this, axes, keepDims);
  }
  mean(axes?: number | readonly number[], keepDims = false): Tensor {
    return ops.mean(this, axes, keepDims);
  }
  max(axes?: number | readonly number[], keepDims = false): Tensor {
    return ops.max(this, axes, keepDims);
  }
  cast(to: DType): Tensor {
    return ops.cast(this, to);
  }
}
