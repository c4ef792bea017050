/**
 * The value type of the float64 reference (`ref.ts`): a dense row-major Float64Array with a shape
 * and the dtype the engine would give it. Integers and booleans are held as exact float64 numbers
 * (0/1 for bool), so one array type serves every dtype.
 */
import { type DType, HostTensor, sizeOf } from "../../src/tensor/host.ts";

export interface RefTensor {
  readonly data: Float64Array;
  readonly shape: readonly number[];
  readonly dtype: DType;
}

export function refZeros(shape: readonly number[], dtype: DType): RefTensor {
  return { data: new Float64Array(sizeOf(shape)), shape: [...shape], dtype };
}

export function refTensor(
  data: ArrayLike<number>,
  shape: readonly number[],
  dtype: DType = "float32",
): RefTensor {
  if (data.length !== sizeOf(shape)) throw new Error(`ref: ${data.length} values for shape [${shape}]`);
  return { data: Float64Array.from(data), shape: [...shape], dtype };
}

/** Row-major strides of a shape. */
export function stridesOf(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length).fill(1);
  for (let i = shape.length - 2; i >= 0; i--) s[i] = s[i + 1]! * shape[i + 1]!;
  return s;
}

/** A host tensor's values as float64. */
export function fromHost(t: HostTensor): RefTensor {
  const data = Float64Array.from(t.data as ArrayLike<number | bigint>, (v) => Number(v));
  return { data, shape: [...t.shape], dtype: t.dtype };
}

/** A host tensor of the reference value (float32 values are rounded). */
export function toHost(t: RefTensor): HostTensor {
  switch (t.dtype) {
    case "float32":
      return new HostTensor(Float32Array.from(t.data), t.shape);
    case "int64":
      return new HostTensor(
        BigInt64Array.from(t.data, (v) => BigInt(v)),
        t.shape,
      );
    case "int32":
      return new HostTensor(Int32Array.from(t.data), t.shape);
    case "bool":
      return new HostTensor(
        Uint8Array.from(t.data, (v) => (v ? 1 : 0)),
        t.shape,
      );
  }
}
