/**
 * Reading and writing safetensors files, the weight format of diffusers and the Hugging Face hub.
 *
 * Reading gives host tensors: F32 as float32; F16, BF16 and F64 converted to float32; I64 as
 * int64; I32, I16, I8 and U8 as int32; BOOL as bool. `{ raw: true }` gives the stored bytes
 * instead. Writing takes host tensors (or raw tensors, written as they are) and a target dtype per
 * tensor or for all float tensors (F32, F16 or BF16: rounded to nearest even, as PyTorch does).
 * The output is what the reference implementation writes for the same tensors: tensors ordered by
 * dtype rank descending then by name, compact JSON in that order, header padded with spaces to a
 * multiple of 8. Writing a file is atomic (see atomic.ts). Header validation: safetensors-header.ts.
 */

import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { type DType, HostTensor } from "../tensor/host.ts";
import { writeFileAtomic } from "./atomic.ts";
import { bf16ToFloat32, f16ToFloat32, float32ToBf16, float32ToF16 } from "./half.ts";
import {
  checkHeaderLength,
  DTYPES,
  formatError,
  parseHeader,
  type SafetensorsDtype,
  type SafetensorsLayout,
  type TensorEntry,
} from "./safetensors-header.ts";

export {
  DTYPES,
  MAX_HEADER_BYTES,
  type SafetensorsDtype,
  type SafetensorsLayout,
} from "./safetensors-header.ts";

/** A tensor as stored: dtype, shape and little-endian bytes. */
export interface RawTensor {
  readonly dtype: SafetensorsDtype;
  readonly shape: readonly number[];
  readonly bytes: Uint8Array;
}

export interface Safetensors<T> {
  /** Tensors by name, in file order. */
  readonly tensors: Map<string, T>;
  /** The `__metadata__` strings ({} when absent). */
  readonly metadata: Record<string, string>;
  /** The stored dtype of each tensor. */
  readonly dtypes: Map<string, SafetensorsDtype>;
}

export interface ReadOptions {
  /** Keep the stored bytes (`RawTensor`) instead of converting to host tensors. */
  readonly raw?: boolean;
  /** Names the input in error messages (reading from a path uses the path). */
  readonly source?: string;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function checkEndian(): void {
  // Typed arrays use the host's byte order; safetensors is little-endian. Every platform Node
  // ships for is little-endian, so rather than byte-swap we refuse loudly.
  if (!LITTLE_ENDIAN) throw new Error("safetensors support needs a little-endian host");
}

/** Converts one stored tensor to a host tensor (see the file comment for the mapping). */
export function rawToHost(raw: RawTensor): HostTensor {
  const copy = raw.bytes.slice(); // own, aligned buffer
  const b = copy.buffer;
  const shape = raw.shape;
  switch (raw.dtype) {
    case "F32":
      return new HostTensor(new Float32Array(b), shape);
    case "F16":
      return new HostTensor(f16ToFloat32(new Uint16Array(b)), shape);
    case "BF16":
      return new HostTensor(bf16ToFloat32(new Uint16Array(b)), shape);
    case "F64":
      return new HostTensor(Float32Array.from(new Float64Array(b)), shape);
    case "I64":
      return new HostTensor(new BigInt64Array(b), shape);
    case "I32":
      return new HostTensor(new Int32Array(b), shape);
    case "I16":
      return new HostTensor(Int32Array.from(new Int16Array(b)), shape);
    case "I8":
      return new HostTensor(Int32Array.from(new Int8Array(b)), shape);
    case "U8":
      return new HostTensor(Int32Array.from(copy), shape);
    case "BOOL":
      return new HostTensor(copy, shape);
  }
}

function collect(
  layout: SafetensorsLayout,
  data: Uint8Array,
  raw: boolean,
): Safetensors<HostTensor> | Safetensors<RawTensor> {
  checkEndian();
  const dtypes = new Map<string, SafetensorsDtype>();
  const raws = new Map<string, RawTensor>();
  for (const e of layout.entries) {
    dtypes.set(e.name, e.dtype);
    // A view here; raw results get their own copy below, rawToHost copies as it converts.
    raws.set(e.name, { dtype: e.dtype, shape: e.shape, bytes: data.subarray(e.begin, e.end) });
  }
  const metadata = { ...layout.metadata };
  if (raw) {
    for (const [name, r] of raws) raws.set(name, { ...r, bytes: r.bytes.slice() });
    return { tensors: raws, metadata, dtypes };
  }
  const tensors = new Map<string, HostTensor>();
  for (const [name, r] of raws) tensors.set(name, rawToHost(r));
  return { tensors, metadata, dtypes };
}

/** Parses and validates only the header of safetensors bytes (names, dtypes, shapes, offsets). */
export function parseSafetensorsHeader(bytes: Uint8Array, source = "bytes"): SafetensorsLayout {
  const n = checkHeaderLength(bytes.subarray(0, 8), bytes.length, source);
  return parseHeader(bytes.subarray(8, 8 + n), bytes.length - 8 - n, source);
}

/** Parses safetensors bytes. */
export function parseSafetensors(
  bytes: Uint8Array,
  options: ReadOptions & { raw: true },
): Safetensors<RawTensor>;
export function parseSafetensors(
  bytes: Uint8Array,
  options?: ReadOptions & { raw?: false },
): Safetensors<HostTensor>;
export function parseSafetensors(
  bytes: Uint8Array,
  options: ReadOptions = {},
): Safetensors<HostTensor> | Safetensors<RawTensor> {
  const layout = parseSafetensorsHeader(bytes, options.source ?? "bytes");
  return collect(layout, bytes.subarray(layout.dataStart), options.raw === true);
}

/** Fills `out` with the file's bytes from `position` on. */
function readInto(fd: number, out: Uint8Array, position: number, path: string): Uint8Array {
  let off = 0;
  while (off < out.length) {
    const got = readSync(fd, out, off, out.length - off, position + off);
    if (got === 0) throw formatError(path, `the file ended after ${position + off} bytes while reading`);
    off += got;
  }
  return out;
}

const readExactly = (fd: number, length: number, position: number, path: string): Uint8Array =>
  readInto(fd, new Uint8Array(length), position, path);

/**
 * One tensor read from the file straight into the memory it ends up in: F32 (and I64, I32) into its
 * typed array; F16 and BF16 into the upper half of their float32 array, then widened in place
 * (half.ts). Reading a model thus allocates its tensors and nothing else — no copy of the whole file
 * that would stay resident as garbage until a collection (15 MiB of the emoji U-Net's LoRA step's
 * peak RSS, docs/benchmarks.md). The rarer dtypes go through `rawToHost`.
 */
function readHost(fd: number, e: TensorEntry, dataStart: number, path: string): HostTensor {
  const position = dataStart + e.begin;
  const bytes = e.end - e.begin;
  const view = (b: ArrayBuffer, offset = 0) => new Uint8Array(b, offset, bytes);
  switch (e.dtype) {
    case "F32": {
      const out = new Float32Array(bytes / 4);
      readInto(fd, view(out.buffer), position, path);
      return new HostTensor(out, e.shape);
    }
    case "F16":
    case "BF16": {
      const n = bytes / 2;
      const out = new Float32Array(n);
      readInto(fd, view(out.buffer, bytes), position, path);
      const src = new Uint16Array(out.buffer, bytes, n);
      return new HostTensor(e.dtype === "F16" ? f16ToFloat32(src, out) : bf16ToFloat32(src, out), e.shape);
    }
    case "I64": {
      const out = new BigInt64Array(bytes / 8);
      readInto(fd, view(out.buffer), position, path);
      return new HostTensor(out, e.shape);
    }
    case "I32": {
      const out = new Int32Array(bytes / 4);
      readInto(fd, view(out.buffer), position, path);
      return new HostTensor(out, e.shape);
    }
    default:
      return rawToHost({ dtype: e.dtype, shape: e.shape, bytes: readExactly(fd, bytes, position, path) });
  }
}

/** Opens `path`, validates its header, and hands the layout and an open descriptor to `use`. */
function withFile<T>(path: string, use: (fd: number, layout: SafetensorsLayout) => T): T {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (err) {
    throw new Error(`cannot open safetensors file ${path}: ${(err as Error).message}`, { cause: err });
  }
  try {
    const size = fstatSync(fd).size;
    const first8 = readExactly(fd, Math.min(8, size), 0, path);
    const n = checkHeaderLength(first8, size, path);
    const layout = parseHeader(readExactly(fd, n, 8, path), size - 8 - n, path);
    return use(fd, layout);
  } catch (err) {
    const msg = (err as Error).message;
    if (msg.startsWith("invalid safetensors")) throw err;
    // I/O errors (a directory, a device error) and allocation failures of very large files.
    throw new Error(`cannot read safetensors file ${path}: ${msg}`, { cause: err });
  } finally {
    closeSync(fd);
  }
}

/** Reads and validates only the header of a safetensors file. */
export function readSafetensorsHeader(path: string): SafetensorsLayout {
  return withFile(path, (_fd, layout) => layout);
}

/** Reads a safetensors file. Errors name the file and the problem. */
export function readSafetensors(path: string, options: ReadOptions & { raw: true }): Safetensors<RawTensor>;
export function readSafetensors(
  path: string,
  options?: ReadOptions & { raw?: false },
): Safetensors<HostTensor>;
export function readSafetensors(
  path: string,
  options: ReadOptions = {},
): Safetensors<HostTensor> | Safetensors<RawTensor> {
  return withFile(path, (fd, layout) => {
    checkEndian();
    const dtypes = new Map<string, SafetensorsDtype>();
    for (const e of layout.entries) dtypes.set(e.name, e.dtype);
    const metadata = { ...layout.metadata };
    if (options.raw) {
      const raws = new Map<string, RawTensor>();
      for (const e of layout.entries) {
        const bytes = readExactly(fd, e.end - e.begin, layout.dataStart + e.begin, path);
        raws.set(e.name, { dtype: e.dtype, shape: e.shape, bytes });
      }
      return { tensors: raws, metadata, dtypes };
    }
    const tensors = new Map<string, HostTensor>();
    for (const e of layout.entries) tensors.set(e.name, readHost(fd, e, layout.dataStart, path));
    return { tensors, metadata, dtypes };
  });
}

// ---------------------------------------------------------------------------------------------
// Writing

/** Dtypes each host dtype can be written as (the first is the default). */
const WRITABLE: Record<DType, readonly SafetensorsDtype[]> = {
  float32: ["F32", "F16", "BF16", "F64"],
  int64: ["I64", "I32"],
  int32: ["I32", "I64"],
  bool: ["BOOL", "U8"],
};

export interface WriteOptions {
  /** Stored dtype of every float32 tensor: F32 (default), F16 or BF16. */
  readonly dtype?: "F32" | "F16" | "BF16";
  /** Stored dtype of particular tensors, by name (overrides `dtype`). */
  readonly dtypes?: Readonly<Record<string, SafetensorsDtype>>;
  /** String metadata (written as `__metadata__`, e.g. `{ format: "pt" }` as PyTorch writers do). */
  readonly metadata?: Readonly<Record<string, string>>;
}

export type TensorsToWrite =
  | ReadonlyMap<string, HostTensor | RawTensor>
  | Readonly<Record<string, HostTensor | RawTensor>>;

function bytesOf(view: ArrayBufferView): Uint8Array {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

function toInt32Checked(src: BigInt64Array, name: string): Int32Array {
  const out = new Int32Array(src.length);
  for (let i = 0; i < src.length; i++) {
    const v = src[i]!;
    if (v < -2147483648n || v > 2147483647n) {
      throw new Error(`tensor ${JSON.stringify(name)}: value ${v} does not fit I32; write it as I64`);
    }
    out[i] = Number(v);
  }
  return out;
}

/** Encodes a host tensor as `dtype` (which must be one it can be written as). */
export function hostToRaw(t: HostTensor, dtype: SafetensorsDtype, name = "tensor"): RawTensor {
  checkEndian();
  const allowed = WRITABLE[t.dtype];
  if (!allowed.includes(dtype)) {
    throw new Error(
      `tensor ${JSON.stringify(name)}: cannot write a ${t.dtype} tensor as ${dtype}; use one of ${allowed.join(", ")}`,
    );
  }
  const d = t.data;
  let bytes: Uint8Array;
  if (d instanceof Float32Array) {
    if (dtype === "F16") bytes = bytesOf(float32ToF16(d));
    else if (dtype === "BF16") bytes = bytesOf(float32ToBf16(d));
    else if (dtype === "F64") bytes = bytesOf(Float64Array.from(d));
    else bytes = bytesOf(d);
  } else if (d instanceof BigInt64Array) {
    bytes = dtype === "I32" ? bytesOf(toInt32Checked(d, name)) : bytesOf(d);
  } else if (d instanceof Int32Array) {
    bytes = dtype === "I64" ? bytesOf(BigInt64Array.from(d, (v) => BigInt(v))) : bytesOf(d);
  } else {
    bytes = bytesOf(d);
  }
  return { dtype, shape: t.shape, bytes };
}

function compareUtf8(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8"));
}

/** Encodes tensors as safetensors bytes. */
export function serializeSafetensors(tensors: TensorsToWrite, options: WriteOptions = {}): Uint8Array {
  const items: [string, HostTensor | RawTensor][] =
    tensors instanceof Map
      ? [...(tensors as ReadonlyMap<string, HostTensor | RawTensor>)]
      : Object.entries(tensors as Readonly<Record<string, HostTensor | RawTensor>>);
  const raws: [string, RawTensor][] = items.map(([name, t]) => {
    if (name === "__metadata__") throw new Error(`"__metadata__" cannot be a tensor name`);
    if (t instanceof HostTensor) {
      const dtype = options.dtypes?.[name] ?? (t.dtype === "float32" ? options.dtype : undefined);
      return [name, hostToRaw(t, dtype ?? WRITABLE[t.dtype][0]!, name)];
    }
    let n = DTYPES[t.dtype].bytes;
    for (const dim of t.shape) n *= dim;
    if (n !== t.bytes.length) {
      throw new Error(
        `raw tensor ${JSON.stringify(name)} has ${t.bytes.length} bytes; ${t.dtype} ${JSON.stringify(t.shape)} needs ${n}`,
      );
    }
    return [name, t];
  });
  raws.sort(([an, a], [bn, b]) => DTYPES[b.dtype].rank - DTYPES[a.dtype].rank || compareUtf8(an, bn));

  const parts: string[] = [];
  for (const [k, v] of Object.entries(options.metadata ?? {})) {
    if (typeof v !== "string")
      throw new Error(`metadata ${JSON.stringify(k)} must be a string, got ${typeof v}`);
  }
  if (options.metadata !== undefined) parts.push(`"__metadata__":${JSON.stringify(options.metadata)}`);
  let offset = 0;
  for (const [name, r] of raws) {
    const end = offset + r.bytes.length;
    parts.push(
      `${JSON.stringify(name)}:${JSON.stringify({ dtype: r.dtype, shape: r.shape, data_offsets: [offset, end] })}`,
    );
    offset = end;
  }
  let header = new TextEncoder().encode(`{${parts.join(",")}}`);
  const pad = (8 - (header.length % 8)) % 8;
  if (pad > 0) {
    const padded = new Uint8Array(header.length + pad).fill(0x20);
    padded.set(header);
    header = padded;
  }
  const out = new Uint8Array(8 + header.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(header.length), true);
  out.set(header, 8);
  let at = 8 + header.length;
  for (const [, r] of raws) {
    out.set(r.bytes, at);
    at += r.bytes.length;
  }
  return out;
}

/** Writes tensors to a safetensors file, atomically. */
export function writeSafetensors(path: string, tensors: TensorsToWrite, options: WriteOptions = {}): void {
  writeFileAtomic(path, serializeSafetensors(tensors, options));
}
