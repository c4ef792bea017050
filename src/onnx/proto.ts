/**
 * A minimal protocol-buffer writer for the subset of onnx.proto the engine emits: ModelProto,
 * GraphProto, NodeProto, AttributeProto, TensorProto and ValueInfoProto. Field numbers follow
 * onnx/onnx.proto (proto2; repeated scalars written unpacked, which every reader accepts).
 */
import type { DType, HostData } from "../tensor/host.ts";

export type OnnxAttr =
  | { kind: "int"; value: number }
  | { kind: "ints"; value: readonly number[] }
  | { kind: "float"; value: number }
  | { kind: "floats"; value: readonly number[] }
  | { kind: "string"; value: string }
  | { kind: "tensor"; value: OnnxTensor };

export interface OnnxNode {
  opType: string;
  inputs: readonly string[];
  outputs: readonly string[];
  name?: string;
  domain?: string;
  attributes?: Readonly<Record<string, OnnxAttr>>;
}

export interface OnnxTensor {
  name: string;
  dtype: DType;
  dims: readonly number[];
  data: HostData;
}

export interface OnnxValueInfo {
  name: string;
  dtype: DType;
  shape: readonly number[];
}

export interface OnnxModel {
  opsetVersion: number;
  irVersion: number;
  producerName: string;
  graph: {
    name: string;
    nodes: readonly OnnxNode[];
    inputs: readonly OnnxValueInfo[];
    outputs: readonly OnnxValueInfo[];
    initializers: readonly OnnxTensor[];
  };
}

/** An int attribute of a node, if it has one. */
/**
 * Records `node` as a reader of `value`, appending to the value's list in place (a value such as a
 * shared shape constant can have thousands of readers: copying its list per reader is quadratic).
 */
export function addReader(readers: Map<string, OnnxNode[]>, value: string, node: OnnxNode): void {
  const list = readers.get(value);
  if (list) list.push(node);
  else readers.set(value, [node]);
}

export const attrInt = (n: OnnxNode, k: string): number | undefined => {
  const a = n.attributes?.[k];
  return a?.kind === "int" ? a.value : undefined;
};

/** An ints attribute of a node, if it has one. */
export const attrInts = (n: OnnxNode, k: string): readonly number[] | undefined => {
  const a = n.attributes?.[k];
  return a?.kind === "ints" ? a.value : undefined;
};

/** A string attribute of a node, if it has one. */
export const attrString = (n: OnnxNode, k: string): string | undefined => {
  const a = n.attributes?.[k];
  return a?.kind === "string" ? a.value : undefined;
};

/** TensorProto.DataType */
export const ONNX_DTYPE: Record<DType, number> = { float32: 1, int32: 6, int64: 7, bool: 9 };

class Writer {
  private chunks: Uint8Array[] = [];
  private buf = new Uint8Array(256);
  private pos = 0;
  length = 0;

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    this.flush();
    if (n > this.buf.length) this.buf = new Uint8Array(Math.max(n, 2 * this.buf.length));
  }
  private flush(): void {
    if (this.pos > 0) this.chunks.push(this.buf.slice(0, this.pos));
    this.pos = 0;
  }
  byte(b: number): void {
    this.ensure(1);
    this.buf[this.pos++] = b;
    this.length++;
  }
  varint(v: number | bigint): void {
    let x = BigInt.asUintN(64, BigInt(v));
    if (x < 128n) {
      this.byte(Number(x));
      return;
    }
    while (x >= 128n) {
      this.byte(Number(x & 127n) | 128);
      x >>= 7n;
    }
    this.byte(Number(x));
  }
  bytes(b: Uint8Array): void {
    if (b.length > 4096) {
      this.flush();
      this.chunks.push(b);
    } else {
      this.ensure(b.length);
      this.buf.set(b, this.pos);
      this.pos += b.length;
    }
    this.length += b.length;
  }
  tag(field: number, wire: number): void {
    this.varint((field << 3) | wire);
  }
  finish(): Uint8Array {
    this.flush();
    const out = new Uint8Array(this.length);
    let at = 0;
    for (const c of this.chunks) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  }
}

const utf8 = new TextEncoder();

function intField(w: Writer, field: number, v: number | bigint): void {
  w.tag(field, 0);
  w.varint(v);
}
function bytesField(w: Writer, field: number, b: Uint8Array): void {
  w.tag(field, 2);
  w.varint(b.length);
  w.bytes(b);
}
function stringField(w: Writer, field: number, s: string): void {
  bytesField(w, field, utf8.encode(s));
}
function messageField(w: Writer, field: number, build: (w: Writer) => void): void {
  const inner = new Writer();
  build(inner);
  bytesField(w, field, inner.finish());
}
function floatField(w: Writer, field: number, v: number): void {
  w.tag(field, 5);
  const b = new Uint8Array(4);
  new DataView(b.buffer).setFloat32(0, v, true);
  w.bytes(b);
}

function rawBytes(data: HostData): Uint8Array {
  // typed arrays are little-endian on every platform Node runs on
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

function tensorProto(w: Writer, t: OnnxTensor): void {
  for (const d of t.dims) intField(w, 1, d);
  intField(w, 2, ONNX_DTYPE[t.dtype]);
  stringField(w, 8, t.name);
  bytesField(w, 9, rawBytes(t.data));
}

function valueInfo(w: Writer, v: OnnxValueInfo): void {
  stringField(w, 1, v.name);
  messageField(w, 2, (tp) =>
    messageField(tp, 1, (tt) => {
      intField(tt, 1, ONNX_DTYPE[v.dtype]);
      messageField(tt, 2, (sh) => {
        for (const d of v.shape) messageField(sh, 1, (dim) => intField(dim, 1, d));
      });
    }),
  );
}

function attribute(w: Writer, name: string, a: OnnxAttr): void {
  stringField(w, 1, name);
  switch (a.kind) {
    case "float":
      floatField(w, 2, a.value);
      intField(w, 20, 1);
      break;
    case "int":
      intField(w, 3, a.value);
      intField(w, 20, 2);
      break;
    case "string":
      stringField(w, 4, a.value);
      intField(w, 20, 3);
      break;
    case "tensor":
      messageField(w, 5, (t) => tensorProto(t, a.value));
      intField(w, 20, 4);
      break;
    case "floats":
      for (const v of a.value) floatField(w, 7, v);
      intField(w, 20, 6);
      break;
    case "ints":
      for (const v of a.value) intField(w, 8, v);
      intField(w, 20, 7);
      break;
  }
}

function nodeProto(w: Writer, n: OnnxNode): void {
  for (const i of n.inputs) stringField(w, 1, i);
  for (const o of n.outputs) stringField(w, 2, o);
  if (n.name) stringField(w, 3, n.name);
  stringField(w, 4, n.opType);
  for (const [k, a] of Object.entries(n.attributes ?? {})) messageField(w, 5, (aw) => attribute(aw, k, a));
  if (n.domain) stringField(w, 7, n.domain);
}

/** Serializes a model to ONNX protobuf bytes. */
export function encodeModel(m: OnnxModel): Uint8Array {
  const w = new Writer();
  intField(w, 1, m.irVersion);
  stringField(w, 2, m.producerName);
  messageField(w, 7, (g) => {
    for (const n of m.graph.nodes) messageField(g, 1, (nw) => nodeProto(nw, n));
    stringField(g, 2, m.graph.name);
    for (const t of m.graph.initializers) messageField(g, 5, (tw) => tensorProto(tw, t));
    for (const v of m.graph.inputs) messageField(g, 11, (vw) => valueInfo(vw, v));
    for (const v of m.graph.outputs) messageField(g, 12, (vw) => valueInfo(vw, v));
  });
  messageField(w, 8, (op) => {
    stringField(op, 1, "");
    intField(op, 2, m.opsetVersion);
  });
  // ONNX Runtime's contrib operators (FastGelu) need their domain imported
  if (m.graph.nodes.some((n) => n.domain === "com.microsoft")) {
    messageField(w, 8, (op) => {
      stringField(op, 1, "com.microsoft");
      intField(op, 2, 1);
    });
  }
  return w.finish();
}
