/**
 * PNG writing (PNG spec, W3C "Portable Network Graphics (PNG) Specification", 3rd ed.) and reading
 * of PNG text chunks.
 *
 * The encoder writes 8-bit grey, grey+alpha, RGB or RGBA, non-interlaced, with a filter chosen per
 * row by the spec's suggested heuristic (the smallest sum of absolute filtered bytes) and zlib from
 * node:zlib. Text chunks carry generation parameters the way A1111 (key `parameters`) and ComfyUI
 * (`prompt`, `workflow`) do: `tEXt` when the text is Latin-1, `iTXt` (UTF-8) otherwise. Decoding
 * whole images lives in image-decode.ts.
 */

import { deflateSync, inflateSync } from "node:zlib";
import { writeFileAtomic } from "./atomic.ts";
import { checkRaster, type Raster } from "./raster.ts";

export const PNG_SIGNATURE = Uint8Array.of(0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a);

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32 (ISO 3309 / ITU-T V.42, polynomial 0xEDB88320), as PNG chunks use. */
export function crc32(bytes: Uint8Array, crc = 0): number {
  let c = ~crc >>> 0;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
}

/** One chunk: length, type, data, CRC over type and data. */
export function pngChunk(type: string, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(data, 8);
  view.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}

export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

const COLOR_TYPE = { 1: 0, 2: 4, 3: 2, 4: 6 } as const;

/** The IHDR chunk of an 8-bit, non-interlaced image. */
export function ihdrChunk(r: Raster): Uint8Array {
  const d = new Uint8Array(13);
  const v = new DataView(d.buffer);
  v.setUint32(0, r.width);
  v.setUint32(4, r.height);
  d[8] = 8; // bit depth
  d[9] = COLOR_TYPE[r.channels];
  // compression 0 (zlib), filter method 0 (adaptive), interlace 0 (none)
  return pngChunk("IHDR", d);
}

function paeth(a: number, b: number, c: number): number {
  const p = a + b - c;
  const pa = Math.abs(p - a);
  const pb = Math.abs(p - b);
  const pc = Math.abs(p - c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

/** Filters each row (types 0–4, picked per row) and deflates: the contents of IDAT / fdAT. */
export function compressPixels(r: Raster, level = 6): Uint8Array {
  checkRaster(r);
  const bpp = r.channels;
  const stride = r.width * bpp;
  const out = new Uint8Array(r.height * (stride + 1));
  const cand = Array.from({ length: 5 }, () => new Uint8Array(stride));
  const zero = new Uint8Array(stride);
  for (let y = 0; y < r.height; y++) {
    const row = r.data.subarray(y * stride, (y + 1) * stride);
    const up = y > 0 ? r.data.subarray((y - 1) * stride, y * stride) : zero;
    let best = 0;
    let bestCost = Number.POSITIVE_INFINITY;
    for (let f = 0; f < 5; f++) {
      const c = cand[f]!;
      let cost = 0;
      for (let i = 0; i < stride; i++) {
        const a = i >= bpp ? row[i - bpp]! : 0;
        const b = up[i]!;
        const x = row[i]!;
        let v: number;
        if (f === 0) v = x;
        else if (f === 1) v = x - a;
        else if (f === 2) v = x - b;
        else if (f === 3) v = x - ((a + b) >> 1);
        else v = x - paeth(a, b, i >= bpp ? up[i - bpp]! : 0);
        v &= 0xff;
        c[i] = v;
        cost += v < 128 ? v : 256 - v;
      }
      if (cost < bestCost) {
        bestCost = cost;
        best = f;
      }
    }
    out[y * (stride + 1)] = best;
    out.set(cand[best]!, y * (stride + 1) + 1);
  }
  return new Uint8Array(deflateSync(out, { level }));
}

function isLatin1(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0xff || c === 0) return false;
  }
  return true;
}

function checkKeyword(key: string): void {
  if (key.length < 1 || key.length > 79 || !isLatin1(key) || key.trim() !== key) {
    throw new Error(
      `PNG text key ${JSON.stringify(key)} must be 1–79 Latin-1 characters without leading or trailing spaces`,
    );
  }
}

/** A tEXt chunk (Latin-1 text) or, when the text needs it, an iTXt chunk (UTF-8). */
export function textChunk(key: string, value: string): Uint8Array {
  checkKeyword(key);
  const k = Uint8Array.from(key, (ch) => ch.charCodeAt(0));
  if (isLatin1(value)) {
    return pngChunk(
      "tEXt",
      concatBytes([k, Uint8Array.of(0), Uint8Array.from(value, (ch) => ch.charCodeAt(0))]),
    );
  }
  // keyword \0, compression flag 0, method 0, language tag "" \0, translated keyword "" \0, text
  const head = Uint8Array.of(0, 0, 0, 0, 0);
  return pngChunk("iTXt", concatBytes([k, head, new TextEncoder().encode(value)]));
}

export interface PngOptions {
  /** Text chunks, e.g. `{ parameters: "a cat, Steps: 20, Sampler: Euler, Seed: 1" }`. */
  readonly text?: Readonly<Record<string, string>>;
  /** zlib level 0–9 (default 6). */
  readonly level?: number;
}

/** Encodes an 8-bit raster as PNG bytes. */
export function encodePng(image: Raster, options: PngOptions = {}): Uint8Array {
  const parts = [PNG_SIGNATURE, ihdrChunk(image)];
  for (const [k, v] of Object.entries(options.text ?? {})) parts.push(textChunk(k, v));
  parts.push(pngChunk("IDAT", compressPixels(image, options.level)));
  parts.push(pngChunk("IEND", new Uint8Array(0)));
  return concatBytes(parts);
}

/** Encodes and writes a PNG file, atomically. */
export function writePng(path: string, image: Raster, options: PngOptions = {}): void {
  writeFileAtomic(path, encodePng(image, options));
}

/** The chunks of a PNG (type and data), checked for truncation; CRCs are checked when `checkCrc`. */
export function* pngChunks(
  bytes: Uint8Array,
  checkCrc = true,
): Generator<{ type: string; data: Uint8Array }> {
  if (bytes.length < 8 || PNG_SIGNATURE.some((b, i) => bytes[i] !== b)) {
    throw new Error("not a PNG file (the 8-byte signature is missing)");
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 8;
  while (at < bytes.length) {
    if (at + 12 > bytes.length) throw new Error(`PNG truncated: a chunk header at byte ${at} is cut off`);
    const len = view.getUint32(at);
    const type = String.fromCharCode(...bytes.subarray(at + 4, at + 8));
    if (at + 12 + len > bytes.length)
      throw new Error(`PNG truncated: chunk ${type} at byte ${at} is cut off`);
    if (checkCrc && crc32(bytes.subarray(at + 4, at + 8 + len)) !== view.getUint32(at + 8 + len)) {
      throw new Error(`PNG chunk ${type} at byte ${at} has a bad CRC (the file is corrupted)`);
    }
    yield { type, data: bytes.subarray(at + 8, at + 8 + len) };
    if (type === "IEND") return;
    at += 12 + len;
  }
}

const latin1 = new TextDecoder("latin1");
const utf8 = new TextDecoder("utf-8");

/** The text chunks (tEXt, zTXt, iTXt) of a PNG as key → value (a repeated key keeps the last). */
export function readPngText(bytes: Uint8Array): Record<string, string> {
  const out: [string, string][] = [];
  for (const { type, data } of pngChunks(bytes)) {
    if (type !== "tEXt" && type !== "zTXt" && type !== "iTXt") continue;
    const nul = data.indexOf(0);
    if (nul < 1) throw new Error(`PNG ${type} chunk has no keyword`);
    const key = latin1.decode(data.subarray(0, nul));
    if (type === "tEXt") out.push([key, latin1.decode(data.subarray(nul + 1))]);
    else if (type === "zTXt") out.push([key, latin1.decode(inflateSync(data.subarray(nul + 2)))]);
    else {
      const compressed = data[nul + 1] === 1;
      const lang = data.indexOf(0, nul + 3);
      const translated = lang < 0 ? -1 : data.indexOf(0, lang + 1);
      if (translated < 0) throw new Error(`PNG iTXt chunk ${JSON.stringify(key)} is malformed`);
      const body = data.subarray(translated + 1);
      out.push([key, utf8.decode(compressed ? inflateSync(body) : body)]);
    }
  }
  return Object.fromEntries(out);
}
