/**
 * Decoding PNG and JPEG files into 8-bit rasters, for loading image folders.
 *
 * PNG goes through `fast-png` (all bit depths, palettes, interlacing), JPEG through `jpeg-js`.
 * Everything is brought to 8 bits per channel: 16-bit samples are rounded (v / 257), 1/2/4-bit
 * grey is scaled to 0–255, palettes are expanded to RGB(A). Before decoding, the size in the
 * header is checked against `maxPixels`, so a small hostile file cannot demand gigabytes.
 */

import { readFileSync } from "node:fs";
import { convertIndexedToRgb, type DecodedPng, decode as decodePngFile } from "fast-png";
import { decode as decodeJpegFile } from "jpeg-js";
import type { Channels, Raster } from "./raster.ts";

export interface DecodeOptions {
  /** Refuse images with more pixels than this (default 100 million). */
  readonly maxPixels?: number;
}

const DEFAULT_MAX_PIXELS = 100_000_000;

function isPng(b: Uint8Array): boolean {
  return b.length >= 8 && b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47;
}

function isJpeg(b: Uint8Array): boolean {
  return b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff;
}

function checkPixels(width: number, height: number, max: number): void {
  if (width * height > max) {
    throw new Error(
      `image is ${width}×${height}, more than the ${max}-pixel limit (pass a larger maxPixels)`,
    );
  }
}

function unpackLowDepth(png: DecodedPng): Uint8Array {
  const { width, height, depth } = png;
  const src = png.data as Uint8Array;
  const stride = Math.ceil((width * depth) / 8);
  const scale = 255 / ((1 << depth) - 1);
  const out = new Uint8Array(width * height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const bit = x * depth;
      const byte = src[y * stride + (bit >> 3)]!;
      const v = (byte >> (8 - depth - (bit & 7))) & ((1 << depth) - 1);
      out[y * width + x] = Math.round(v * scale);
    }
  }
  return out;
}

function decodePng(bytes: Uint8Array, maxPixels: number): Raster {
  if (bytes.length >= 24) {
    const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    checkPixels(v.getUint32(16), v.getUint32(20), maxPixels);
  }
  const png = decodePngFile(bytes);
  const { width, height } = png;
  if (png.palette !== undefined && png.palette.length > 0) {
    const data = convertIndexedToRgb(png);
    return { width, height, channels: data.length / (width * height) === 4 ? 4 : 3, data };
  }
  const channels = png.channels as Channels;
  if (png.depth === 16) {
    const src = png.data;
    const data = new Uint8Array(src.length);
    for (let i = 0; i < src.length; i++) data[i] = Math.round(src[i]! / 257);
    return { width, height, channels, data };
  }
  if (png.depth < 8) return { width, height, channels: 1, data: unpackLowDepth(png) };
  return { width, height, channels, data: new Uint8Array(png.data) };
}

function decodeJpeg(bytes: Uint8Array, maxPixels: number): Raster {
  const img = decodeJpegFile(bytes, {
    useTArray: true,
    formatAsRGBA: false,
    maxResolutionInMP: maxPixels / 1e6,
    maxMemoryUsageInMB: Math.max(512, (maxPixels * 8) / 2 ** 20),
  });
  return { width: img.width, height: img.height, channels: 3, data: img.data };
}

/** Decodes PNG or JPEG bytes; `source` names the file in errors. */
export function decodeImage(bytes: Uint8Array, source = "image", options: DecodeOptions = {}): Raster {
  const maxPixels = options.maxPixels ?? DEFAULT_MAX_PIXELS;
  let kind: "PNG" | "JPEG";
  if (isPng(bytes)) kind = "PNG";
  else if (isJpeg(bytes)) kind = "JPEG";
  else throw new Error(`cannot read ${source}: not a PNG or JPEG file`);
  try {
    const r = kind === "PNG" ? decodePng(bytes, maxPixels) : decodeJpeg(bytes, maxPixels);
    if (r.width < 1 || r.height < 1 || r.data.length !== r.width * r.height * r.channels) {
      throw new Error(`decoded ${r.width}×${r.height}×${r.channels} with ${r.data.length} bytes`);
    }
    return r;
  } catch (err) {
    throw new Error(`cannot read ${source}: bad ${kind} data (${(err as Error).message})`, { cause: err });
  }
}

/** Reads and decodes a PNG or JPEG file. */
export function readImage(path: string, options: DecodeOptions = {}): Raster {
  let bytes: Uint8Array;
  try {
    bytes = new Uint8Array(readFileSync(path));
  } catch (err) {
    throw new Error(`cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
  return decodeImage(bytes, path, options);
}
