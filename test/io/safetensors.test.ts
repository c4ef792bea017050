import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { f16BitsToNumber, f32BitsToBf16, f32BitsToF16 } from "../../src/io/half.ts";
import {
  parseSafetensors,
  parseSafetensorsHeader,
  type RawTensor,
  readSafetensors,
  readSafetensorsHeader,
  serializeSafetensors,
  writeSafetensors,
} from "../../src/io/safetensors.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import { Rng } from "../../src/tensor/rng.ts";

const FIXTURE = "test/fixtures/safetensors/inputs.safetensors";

function bitsOf(v: number): number {
  return new Uint32Array(Float32Array.of(v).buffer)[0]!;
}

/** A file made by hand: header JSON (any text) + data bytes. */
function handMade(header: string, data: Uint8Array = new Uint8Array(0), n?: bigint): Uint8Array {
  const h = new TextEncoder().encode(header);
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, n ?? BigInt(h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

test("F16 rounding matches hand-computed values (nearest, ties to even)", () => {
  const cases: [number, number][] = [
    [1 / 3, 0x3555],
    [0.1, 0x2e66],
    [-2, 0xc000],
    [-0, 0x8000],
    [65504, 0x7bff],
    [65519, 0x7bff],
    [65520, 0x7c00], // tie between 65504 (odd mantissa) and 65536: rounds up to Infinity
    [1e6, 0x7c00],
    [Number.POSITIVE_INFINITY, 0x7c00],
    [1 + 2 ** -10, 0x3c01],
    [1 + 2 ** -11, 0x3c00], // tie → even
    [1 + 3 * 2 ** -11, 0x3c02], // tie → even
    [2 ** -14, 0x0400], // smallest normal
    [2 ** -14 - 2 ** -25, 0x0400], // subnormal tie rounds up into the normals
    [2 ** -24, 0x0001], // smallest subnormal
    [2 ** -25, 0x0000], // tie → even (zero)
    [1.5 * 2 ** -25, 0x0001],
    [1e-8, 0x0000],
  ];
  for (const [v, bits] of cases) {
    assert.equal(f32BitsToF16(bitsOf(v)), bits, `f16(${v})`);
  }
  assert.equal(f32BitsToF16(bitsOf(Number.NaN)) & 0x7e00, 0x7e00);
});

test("every F16 value survives F16 → float32 → F16", () => {
  for (let h = 0; h < 65536; h++) {
    const v = f16BitsToNumber(h);
    if (Number.isNaN(v)) continue;
    assert.equal(f32BitsToF16(bitsOf(v)), h);
  }
});

test("BF16 rounding matches hand-computed values", () => {
  const cases: [number, number][] = [
    [1 / 3, 0x3eab],
    [0.1, 0x3dcd],
    [-1.5, 0xbfc0],
    [1 + 2 ** -8, 0x3f80], // tie → even
    [1 + 3 * 2 ** -8, 0x3f82], // tie → even
    [3.4028234663852886e38, 0x7f80], // float32 max rounds to Infinity
  ];
  for (const [v, bits] of cases) assert.equal(f32BitsToBf16(bitsOf(v)), bits, `bf16(${v})`);
  assert.equal(f32BitsToBf16(bitsOf(Number.NaN)) & 0x7fc0, 0x7fc0);
});

test("round trip of every dtype", () => {
  const f = HostTensor.from({ data: Float32Array.of(1 / 3, -2, 0.1, 65520, 1e-8, 7), shape: [2, 3] });
  const bytes = serializeSafetensors(
    {
      f32: f,
      f16: f,
      bf16: f,
      f64: f,
      i64: HostTensor.int64([-(2n ** 62n), 5, 0]),
      i32: new HostTensor(Int32Array.of(-7, 2147483647), [2]),
      b: new HostTensor(Uint8Array.of(1, 0, 1), [3]),
      scalar: HostTensor.scalar(2.5),
      empty: HostTensor.zeros([0, 4]),
    },
    { dtypes: { f16: "F16", bf16: "BF16", f64: "F64" }, metadata: { format: "pt", note: "ünïcode" } },
  );
  const got = parseSafetensors(bytes);
  assert.deepEqual(got.metadata, { format: "pt", note: "ünïcode" });
  assert.deepEqual(Array.from(got.tensors.get("f32")!.data as Float32Array), Array.from(f.data));
  assert.deepEqual(got.tensors.get("f64")!.data, f.data);
  const f16 = got.tensors.get("f16")!;
  assert.equal(f16.dtype, "float32");
  assert.deepEqual(f16.shape, [2, 3]);
  assert.deepEqual(Array.from(f16.data as Float32Array), [
    0.333251953125,
    -2,
    0.0999755859375,
    Number.POSITIVE_INFINITY,
    0,
    7,
  ]);
  assert.deepEqual(
    Array.from(got.tensors.get("bf16")!.data as Float32Array).slice(0, 3),
    [0.333984375, -2, 0.10009765625],
  );
  assert.deepEqual(got.tensors.get("i64")!.data, BigInt64Array.of(-(2n ** 62n), 5n, 0n));
  assert.deepEqual(got.tensors.get("i32")!.data, Int32Array.of(-7, 2147483647));
  assert.deepEqual(got.tensors.get("b")!.data, Uint8Array.of(1, 0, 1));
  assert.deepEqual(got.tensors.get("scalar")!.shape, []);
  assert.deepEqual(got.tensors.get("empty")!.shape, [0, 4]);
  assert.equal(got.dtypes.get("bf16"), "BF16");
  // Reference order: dtype rank descending (I64, F64, F32, I32, BF16, F16, BOOL), then name.
  assert.deepEqual(
    [...got.tensors.keys()],
    ["i64", "f64", "empty", "f32", "scalar", "i32", "bf16", "f16", "b"],
  );
  // The header is padded to a multiple of 8 and the raw bytes round-trip exactly.
  assert.equal(Number(new DataView(bytes.buffer).getBigUint64(0, true)) % 8, 0);
  const raw = parseSafetensors(bytes, { raw: true });
  assert.deepEqual(serializeSafetensors(raw.tensors, { metadata: raw.metadata }), bytes);
});

test("reading a file gives what parsing its bytes gives, for every dtype and both modes", () => {
  // the file reader puts each tensor straight into its own memory (16-bit floats widened in place
  // there): every one of the 65536 F16 and BF16 bit patterns, and odd, empty and scalar shapes
  const all16 = new Uint16Array(65536).map((_, i) => i);
  const f = HostTensor.from({ data: Float32Array.of(1 / 3, -2, 0.1, 65520, 1e-8, 7, -0), shape: [7] });
  const tensors: Record<string, HostTensor | RawTensor> = {
    f32: f,
    f16: f,
    bf16: f,
    f64: f,
    i64: HostTensor.int64([-(2n ** 62n), 5, 0]),
    i32: new HostTensor(Int32Array.of(-7, 2147483647), [2]),
    i16: { dtype: "I16", shape: [2], bytes: new Uint8Array(Int16Array.of(-300, 2).buffer) },
    u8: { dtype: "U8", shape: [3], bytes: Uint8Array.of(255, 0, 9) },
    b: new HostTensor(Uint8Array.of(1, 0, 1), [3]),
    scalar: HostTensor.scalar(2.5),
    empty: HostTensor.zeros([0, 4]),
    emptyHalf: HostTensor.zeros([0]),
  };
  const dtypes = { f16: "F16", bf16: "BF16", f64: "F64", emptyHalf: "F16" } as const;
  const bits = serializeSafetensors(
    {
      f16all: { dtype: "F16", shape: [256, 256], bytes: new Uint8Array(all16.buffer) },
      bf16all: { dtype: "BF16", shape: [65536], bytes: new Uint8Array(all16.buffer) },
    },
    { metadata: { format: "pt" } },
  );
  const dir = mkdtempSync(join(tmpdir(), "diffuse-st-"));
  try {
    for (const [name, bytes] of [
      ["mixed", serializeSafetensors(tensors, { dtypes, metadata: { format: "pt" } })],
      ["bits", bits],
    ] as const) {
      const path = join(dir, `${name}.safetensors`);
      writeFileSync(path, bytes);
      const [read, parsed] = [readSafetensors(path), parseSafetensors(bytes)];
      assert.deepEqual(read.metadata, parsed.metadata);
      assert.deepEqual(read.dtypes, parsed.dtypes);
      assert.deepEqual([...read.tensors.keys()], [...parsed.tensors.keys()]);
      for (const [k, t] of parsed.tensors) {
        const r = read.tensors.get(k)!;
        assert.equal(r.dtype, t.dtype, k);
        assert.deepEqual(r.shape, t.shape, k);
        // NaN payloads compared as bits
        const asBits = (x: HostTensor) =>
          x.data instanceof Float32Array ? new Uint32Array(x.data.buffer, x.data.byteOffset, x.size) : x.data;
        assert.deepEqual(asBits(r), asBits(t), k);
      }
      const raw = readSafetensors(path, { raw: true });
      assert.deepEqual(serializeSafetensors(raw.tensors, { metadata: raw.metadata }), bytes);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("global float dtype, and the small int dtypes read as int32", () => {
  const f = HostTensor.from({ data: Float32Array.of(1 / 3), shape: [1] });
  const got = parseSafetensors(serializeSafetensors({ a: f, b: f }, { dtype: "BF16", dtypes: { b: "F16" } }));
  assert.deepEqual(
    got.dtypes,
    new Map([
      ["a", "BF16"],
      ["b", "F16"],
    ]),
  );
  const data = Uint8Array.of(0xff, 0xff, 0xfe, 0xff, 0x80, 200);
  const h = (d: string, s: number, a: number, b: number) =>
    `"${d}":{"dtype":"${d}","shape":[${s}],"data_offsets":[${a},${b}]}`;
  const file = handMade(`{${h("I16", 2, 0, 4)},${h("I8", 1, 4, 5)},${h("U8", 1, 5, 6)}}`, data);
  const t = parseSafetensors(file).tensors;
  assert.deepEqual(t.get("I16")!.data, Int32Array.of(-1, -2));
  assert.deepEqual(t.get("I8")!.data, Int32Array.of(-128));
  assert.deepEqual(t.get("U8")!.data, Int32Array.of(200));
  assert.throws(
    () => serializeSafetensors({ x: HostTensor.int64([1]) }, { dtypes: { x: "F16" } }),
    /cannot write/,
  );
  assert.throws(
    () => serializeSafetensors({ x: HostTensor.int64([2n ** 40n]) }, { dtypes: { x: "I32" } }),
    /fit I32/,
  );
});

test("reads the diffusers fixture and re-writes it byte for byte", () => {
  const bytes = new Uint8Array(readFileSync(FIXTURE));
  const file = readSafetensors(FIXTURE);
  const labels = file.tensors.get("call0.class_labels")!;
  assert.equal(labels.dtype, "int64");
  assert.deepEqual(labels.toArray(), [0, 7, 10]);
  assert.deepEqual(file.tensors.get("call0.timestep")!.toArray(), [999, 500, 1]);
  assert.deepEqual(file.tensors.get("call1.timestep")!.shape, []);
  assert.deepEqual(file.tensors.get("call0.sample")!.shape, [3, 1, 16, 16]);
  assert.deepEqual(serializeSafetensors(file.tensors), bytes);
  assert.equal(readSafetensorsHeader(FIXTURE).entries.length, 6);
});

test("the full diffusers model file re-writes byte for byte (when shared/ is present)", (t) => {
  const path = ["../shared", "../../shared", "/work/shared"]
    .map((p) => join(p, "reference/diffusers-models/unet2d-a/model/diffusion_pytorch_model.safetensors"))
    .find((p) => existsSync(p));
  if (path === undefined) return t.skip("shared/ reference models not found");
  const file = readSafetensors(path);
  assert.deepEqual(file.metadata, { format: "pt" });
  assert.deepEqual(
    serializeSafetensors(file.tensors, { metadata: file.metadata }),
    new Uint8Array(readFileSync(path)),
  );
});

test("hostile and broken files give clear errors", () => {
  const ok = `{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`;
  const eight = new Uint8Array(8);
  const bad: [string, Uint8Array, RegExp][] = [
    ["too short", Uint8Array.of(1, 2, 3), /shorter than the 8-byte/],
    ["header past the end", handMade(ok, eight, 1000n), /runs past the end/],
    ["2^60 header", handMade(ok, eight, 2n ** 60n), /exceeds the 100000000-byte limit/],
    ["not JSON", handMade("{nope", eight), /not valid JSON/],
    ["not an object", handMade("[1,2]", eight), /must be a JSON object/],
    ["not UTF-8", handMade("{\xff}").map((b, i) => (i === 9 ? 0xff : b)), /not valid UTF-8/],
    [
      "overlap",
      handMade(
        `{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`,
        eight,
      ),
      /overlaps/,
    ],
    ["hole", handMade(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, eight), /leaves a hole/],
    [
      "beyond the buffer",
      handMade(`{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}`, eight),
      /need 16 bytes of data but the file holds 8/,
    ],
    ["bytes left over", handMade(ok, new Uint8Array(12)), /cover 8 bytes of data but the file holds 12/],
    [
      "negative offset",
      handMade(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}}`, eight),
      /non-negative integers/,
    ],
    [
      "float offset",
      handMade(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8.5]}}`, eight),
      /non-negative integers/,
    ],
    [
      "shape mismatch",
      handMade(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, eight),
      /needs 12 bytes but data_offsets \[0, 8\] hold 8/,
    ],
    [
      "huge shape",
      handMade(`{"a":{"dtype":"F32","shape":[1e15,1e15],"data_offsets":[0,8]}}`, eight),
      /too many elements/,
    ],
    [
      "unknown dtype",
      handMade(`{"a":{"dtype":"F7","shape":[2],"data_offsets":[0,8]}}`, eight),
      /unknown or unsupported dtype "F7"/,
    ],
    ["missing dtype", handMade(`{"a":{"shape":[2],"data_offsets":[0,8]}}`, eight), /dtype undefined/],
    [
      "metadata not strings",
      handMade(`{"__metadata__":{"step":3},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, eight),
      /__metadata__ value of "step" must be a string/,
    ],
    [
      "duplicate names",
      handMade(
        `{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`,
        eight,
      ),
      /duplicate tensor name "a"/,
    ],
  ];
  for (const [what, bytes, re] of bad) {
    assert.throws(() => parseSafetensors(bytes), re, what);
    assert.throws(
      () => parseSafetensors(bytes, { source: "x.safetensors" }),
      /invalid safetensors x\.safetensors: /,
      what,
    );
  }
  // The same checks run on the header alone; valid nested keys are not mistaken for duplicates.
  const nested = handMade(
    `{"__metadata__":{"a":"x"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`,
    eight,
  );
  assert.equal(parseSafetensorsHeader(nested).entries.length, 1);
});

test("files: errors name the path; writing is atomic and leaves no temp files", () => {
  const dir = mkdtempSync(join(tmpdir(), "diffuse-st-"));
  try {
    const path = join(dir, "w.safetensors");
    writeSafetensors(path, { w: HostTensor.full([2, 2], 0.5) });
    assert.deepEqual(readSafetensors(path).tensors.get("w")!.toArray(), [0.5, 0.5, 0.5, 0.5]);
    assert.deepEqual(readdirSync(dir), ["w.safetensors"]);
    const bytes = readFileSync(path);
    writeFileSync(join(dir, "cut.safetensors"), bytes.subarray(0, bytes.length - 3));
    assert.throws(
      () => readSafetensors(join(dir, "cut.safetensors")),
      (e: Error) => {
        return e.message.includes(join(dir, "cut.safetensors")) && /truncated/.test(e.message);
      },
    );
    assert.throws(
      () => readSafetensors(join(dir, "missing.safetensors")),
      /cannot open safetensors file .*missing/,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("fuzz: damaged headers either parse or fail with a safetensors error", () => {
  const good = new Uint8Array(readFileSync(FIXTURE));
  const rng = new Rng(99);
  for (let trial = 0; trial < 2000; trial++) {
    const bytes = good.slice(0, trial % 5 === 0 ? 1 + rng.int(good.length - 1) : good.length);
    const flips = 1 + rng.int(3);
    for (let f = 0; f < flips; f++) {
      const at = rng.int(Math.min(bytes.length, 8 + 448));
      bytes[at] = trial % 2 === 0 ? rng.int(256) : '0123456789[]{},:"-.e '[rng.int(21)]!.charCodeAt(0);
    }
    try {
      parseSafetensors(bytes);
    } catch (err) {
      assert.ok(err instanceof Error && err.message.startsWith("invalid safetensors bytes: "), String(err));
    }
  }
});
