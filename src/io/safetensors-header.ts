/**
 * The safetensors header: its dtypes, and a validating parser.
 *
 * Layout of a file (https://github.com/huggingface/safetensors, "Format"): 8 bytes N (unsigned
 * 64-bit little-endian), N bytes of UTF-8 JSON `{name: {dtype, shape, data_offsets: [begin, end]},
 * "__metadata__": {string: string}}`, then the data buffer. Offsets are relative to the buffer
 * start; the tensors must tile the buffer exactly (no holes, no overlaps, nothing after the last).
 *
 * The parser treats the file as hostile: every size is checked against the bytes that exist before
 * anything is allocated or read, so a bad file gives an Error naming the problem, never a crash, a
 * huge allocation or a read out of bounds. The checks follow the reference implementation's.
 */

/** Element types of the safetensors format that diffuse reads. */
export type SafetensorsDtype = "BOOL" | "U8" | "I8" | "I16" | "F16" | "BF16" | "I32" | "F32" | "F64" | "I64";

/**
 * Bytes per element, and the rank of each dtype in the reference implementation's `Dtype` enum
 * (BOOL < U8 < I8 < … < F64 < I64). Its writer orders tensors by this rank, descending, then by
 * name; we do the same so that files match byte for byte.
 */
export const DTYPES: Readonly<Record<SafetensorsDtype, { readonly bytes: number; readonly rank: number }>> = {
  BOOL: { bytes: 1, rank: 0 },
  U8: { bytes: 1, rank: 4 },
  I8: { bytes: 1, rank: 5 },
  I16: { bytes: 2, rank: 9 },
  F16: { bytes: 2, rank: 11 },
  BF16: { bytes: 2, rank: 12 },
  I32: { bytes: 4, rank: 13 },
  F32: { bytes: 4, rank: 15 },
  F64: { bytes: 8, rank: 17 },
  I64: { bytes: 8, rank: 18 },
};

export function isSafetensorsDtype(s: unknown): s is SafetensorsDtype {
  return typeof s === "string" && Object.hasOwn(DTYPES, s);
}

/** The largest header accepted (the reference implementation's limit). */
export const MAX_HEADER_BYTES = 100_000_000;

/** Where one tensor's bytes lie in the data buffer. */
export interface TensorEntry {
  readonly name: string;
  readonly dtype: SafetensorsDtype;
  readonly shape: readonly number[];
  /** Byte offsets relative to the start of the data buffer. */
  readonly begin: number;
  readonly end: number;
}

/** A parsed header: entries in file order (sorted by offset) and the string metadata. */
export interface SafetensorsLayout {
  readonly entries: readonly TensorEntry[];
  readonly metadata: Readonly<Record<string, string>>;
  /** Absolute byte offset of the data buffer (8 + header length). */
  readonly dataStart: number;
  readonly dataLength: number;
}

/** An Error whose message starts with the file (or "safetensors bytes") and says what is wrong. */
export function formatError(source: string, problem: string): Error {
  return new Error(`invalid safetensors ${source}: ${problem}`);
}

/**
 * Reads the 8-byte header length and checks it against the total size. Returns N.
 * `first8` must hold the first min(8, totalSize) bytes of the file.
 */
export function checkHeaderLength(first8: Uint8Array, totalSize: number, source: string): number {
  if (totalSize < 8) {
    throw formatError(source, `it is ${totalSize} bytes, shorter than the 8-byte length prefix (truncated?)`);
  }
  const view = new DataView(first8.buffer, first8.byteOffset, 8);
  const n = view.getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_BYTES)) {
    throw formatError(
      source,
      `header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit (not a safetensors file?)`,
    );
  }
  const len = Number(n);
  if (len + 8 > totalSize) {
    throw formatError(
      source,
      `header length ${len} runs past the end of the ${totalSize}-byte file (truncated?)`,
    );
  }
  if (len < 2) throw formatError(source, `header length ${len} is too short to hold a JSON object`);
  return len;
}

/** The names of the top-level keys of a JSON object text, in order (the text is valid JSON). */
function topLevelKeys(text: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  let i = 0;
  while (i < text.length) {
    const c = text[i]!;
    if (c === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
      if (depth === 1) {
        let k = j + 1;
        while (k < text.length && /\s/.test(text[k]!)) k++;
        if (text[k] === ":") keys.push(JSON.parse(text.slice(i, j + 1)) as string);
      }
      i = j + 1;
      continue;
    }
    if (c === "{" || c === "[") depth++;
    else if (c === "}" || c === "]") depth--;
    i++;
  }
  return keys;
}

function isNonNegInt(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

function describe(v: unknown): string {
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

function parseEntry(name: string, info: unknown, source: string): TensorEntry {
  const bad = (what: string) => formatError(source, `tensor ${JSON.stringify(name)}: ${what}`);
  if (typeof info !== "object" || info === null || Array.isArray(info)) {
    throw bad(`expected {dtype, shape, data_offsets}, got ${describe(info)}`);
  }
  const { dtype, shape, data_offsets: offsets } = info as Record<string, unknown>;
  if (!isSafetensorsDtype(dtype)) {
    throw bad(
      `unknown or unsupported dtype ${describe(dtype)} (supported: ${Object.keys(DTYPES).join(", ")})`,
    );
  }
  if (!Array.isArray(shape) || !shape.every(isNonNegInt)) {
    throw bad(`shape must be an array of non-negative integers, got ${describe(shape)}`);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegInt)) {
    throw bad(`data_offsets must be [begin, end] with non-negative integers, got ${describe(offsets)}`);
  }
  const [begin, end] = offsets as [number, number];
  if (end < begin) throw bad(`data_offsets [${begin}, ${end}] end before they begin`);
  let count = 1;
  for (const d of shape as number[]) {
    count *= d;
    if (count > Number.MAX_SAFE_INTEGER) throw bad(`shape ${describe(shape)} has too many elements`);
  }
  const expected = count * DTYPES[dtype].bytes;
  if (expected !== end - begin) {
    throw bad(
      `shape ${describe(shape)} of ${dtype} needs ${expected} bytes but data_offsets [${begin}, ${end}] hold ${end - begin}`,
    );
  }
  return { name, dtype, shape: shape as number[], begin, end };
}

function parseMetadata(value: unknown, source: string): Record<string, string> {
  if (value === null) return {};
  if (typeof value !== "object" || Array.isArray(value)) {
    throw formatError(source, `__metadata__ must be an object of strings, got ${describe(value)}`);
  }
  const pairs = Object.entries(value);
  for (const [k, v] of pairs) {
    if (typeof v !== "string") {
      throw formatError(
        source,
        `__metadata__ value of ${JSON.stringify(k)} must be a string, got ${describe(v)}`,
      );
    }
  }
  return Object.fromEntries(pairs) as Record<string, string>; // fromEntries: a "__proto__" key stays a key
}

/**
 * Parses and validates the header JSON bytes (the N bytes after the length prefix) against a data
 * buffer of `dataLength` bytes.
 */
export function parseHeader(header: Uint8Array, dataLength: number, source: string): SafetensorsLayout {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(header);
  } catch {
    throw formatError(source, "header is not valid UTF-8 (not a safetensors file?)");
  }
  if (!text.startsWith("{")) {
    throw formatError(
      source,
      `header must be a JSON object starting with "{", got ${describe(text.slice(0, 20))}`,
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw formatError(source, `header is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw formatError(source, "header must be a JSON object");
  }
  const keys = topLevelKeys(text);
  const seen = new Set<string>();
  for (const k of keys) {
    if (seen.has(k)) throw formatError(source, `duplicate tensor name ${JSON.stringify(k)} in the header`);
    seen.add(k);
  }
  let metadata: Record<string, string> = {};
  const entries: TensorEntry[] = [];
  for (const [name, info] of Object.entries(json)) {
    if (name === "__metadata__") metadata = parseMetadata(info, source);
    else entries.push(parseEntry(name, info, source));
  }
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let at = 0;
  for (const e of entries) {
    if (e.begin !== at) {
      const why =
        e.begin < at ? "overlaps the tensor before it" : `leaves a hole (expected it to begin at ${at})`;
      throw formatError(
        source,
        `tensor ${JSON.stringify(e.name)} at data_offsets [${e.begin}, ${e.end}] ${why}`,
      );
    }
    at = e.end;
  }
  if (at > dataLength) {
    throw formatError(
      source,
      `tensors need ${at} bytes of data but the file holds ${dataLength} (truncated?)`,
    );
  }
  if (at < dataLength) {
    throw formatError(source, `the tensors cover ${at} bytes of data but the file holds ${dataLength}`);
  }
  return { entries, metadata, dataStart: 8 + header.length, dataLength };
}
