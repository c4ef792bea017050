/**
 * Host tensors: dense row-major arrays that live in JavaScript memory.
 *
 * They are what goes into and comes out of a compiled graph, what samplers and schedulers work
 * on, and what checkpoints hold. The symbolic tensors of `symbolic.ts` only describe
 * computations; host tensors hold numbers.
 */

export type DType = "float32" | "int64" | "int32" | "bool";

export interface DataOf {
  float32: Float32Array;
  int64: BigInt64Array;
  int32: Int32Array;
  bool: Uint8Array;
}

export type HostData = DataOf[DType];

/** Number of elements of a shape (1 for a scalar). */
export function sizeOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Whether two shapes are equal. */
export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

export function formatShape(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}

function checkShape(shape: readonly number[]): void {
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) {
      throw new Error(`invalid shape ${formatShape(shape)}: dimensions must be non-negative integers`);
    }
  }
}

function dtypeOfData(data: HostData): DType {
  if (data instanceof Float32Array) return "float32";
  if (data instanceof BigInt64Array) return "int64";
  if (data instanceof Int32Array) return "int32";
  return "bool";
}

/** A dense host tensor. `data` is row-major; its length is the product of `shape`. */
export class HostTensor<D extends DType = DType> {
  readonly dtype: D;
  readonly data: DataOf[D];
  readonly shape: readonly number[];

  constructor(data: DataOf[D], shape: readonly number[]) {
    checkShape(shape);
    const n = sizeOf(shape);
    if (data.length !== n) {
      throw new Error(
        `tensor data has ${data.length} elements but shape ${formatShape(shape)} needs ${n}; ` +
          "pass data whose length is the product of the shape",
      );
    }
    this.dtype = dtypeOfData(data) as D;
    this.data = data;
    this.shape = [...shape];
  }

  /** Wraps `{ data, shape }` (the data is not copied). */
  static from<T extends DType = "float32">(t: { data: DataOf[T]; shape: readonly number[] }): HostTensor<T> {
    if (t instanceof HostTensor) return t as HostTensor<T>;
    return new HostTensor<T>(t.data, t.shape);
  }

  static zeros(shape: readonly number[]): HostTensor<"float32"> {
    return new HostTensor(new Float32Array(sizeOf(shape)), shape);
  }

  static full(shape: readonly number[], value: number): HostTensor<"float32"> {
    return new HostTensor(new Float32Array(sizeOf(shape)).fill(value), shape);
  }

  static scalar(value: number): HostTensor<"float32"> {
    return new HostTensor(Float32Array.of(value), []);
  }

  static int64(
    values: readonly (number | bigint)[],
    shape: readonly number[] = [values.length],
  ): HostTensor<"int64"> {
    return new HostTensor(
      BigInt64Array.from(values, (v) => BigInt(v)),
      shape,
    );
  }

  get size(): number {
    return this.data.length;
  }

  /** A copy with its own buffer. */
  clone(): HostTensor<D> {
    return new HostTensor<D>(this.data.slice() as DataOf[D], this.shape);
  }

  /** Same data, another shape of the same size. */
  reshape(shape: readonly number[]): HostTensor<D> {
    return new HostTensor<D>(this.data, shape);
  }

  /** The elements as plain numbers (int64 converted with Number()). */
  toArray(): number[] {
    return Array.from(this.data as ArrayLike<number | bigint>, (v) => Number(v));
  }
}

/** A host float32 tensor, checked. */
export function asFloat32(t: HostTensor, what: string): HostTensor<"float32"> {
  if (t.dtype !== "float32") throw new Error(`${what} must be float32, got ${t.dtype}`);
  return t as HostTensor<"float32">;
}
