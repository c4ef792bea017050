import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { decodeApng, decode as decodeWithFastPng, encode as encodeWithFastPng } from "fast-png";
import { encode as encodeJpeg } from "jpeg-js";
import { encodeApng, writeApng } from "../../src/io/apng.ts";
import { decodeImage, readImage } from "../../src/io/image-decode.ts";
import { crc32, encodePng, readPngText, writePng } from "../../src/io/png.ts";
import { type Raster, toChannels } from "../../src/io/raster.ts";
import { Rng } from "../../src/tensor/rng.ts";

function randomRaster(width: number, height: number, channels: 1 | 2 | 3 | 4, seed: number): Raster {
  const rng = new Rng(seed);
  const data = new Uint8Array(width * height * channels);
  // Smooth gradients plus noise, so every filter type gets picked somewhere.
  for (let i = 0; i < data.length; i++) data[i] = (i % 97) + (i % 3 === 0 ? rng.int(64) : 0);
  return { width, height, channels, data };
}

test("crc32 matches the standard check value", () => {
  assert.equal(crc32(new TextEncoder().encode("123456789")), 0xcbf43926);
  assert.equal(crc32(new Uint8Array(0)), 0);
});

test("encodePng → an independent decoder (CRCs checked) gives the same pixels", () => {
  for (const channels of [1, 2, 3, 4] as const) {
    const img = randomRaster(37, 21, channels, channels);
    const png = encodePng(img);
    const back = decodeWithFastPng(png, { checkCrc: true });
    assert.equal(back.width, 37);
    assert.equal(back.height, 21);
    assert.equal(back.channels, channels);
    assert.equal(back.depth, 8);
    assert.deepEqual(new Uint8Array(back.data), img.data);
    assert.deepEqual(decodeImage(png), img);
  }
  const one = { width: 1, height: 1, channels: 3 as const, data: Uint8Array.of(1, 2, 3) };
  assert.deepEqual(decodeImage(encodePng(one)), one);
  assert.throws(
    () => encodePng({ width: 2, height: 2, channels: 3, data: new Uint8Array(5) }),
    /needs 12 bytes/,
  );
});

test("text chunks round-trip (tEXt for Latin-1, iTXt for other text)", () => {
  const text = {
    parameters: "a red fox, Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 32x32",
    prompt: '{"3": {"class_type": "KSampler"}}',
    note: "café — 猫 🐈",
  };
  const png = encodePng(randomRaster(4, 4, 3, 1), { text });
  assert.deepEqual(readPngText(png), text);
  assert.deepEqual(decodeWithFastPng(png, { checkCrc: true }).text.parameters, text.parameters);
  assert.throws(() => encodePng(randomRaster(1, 1, 1, 1), { text: { "": "x" } }), /1–79 Latin-1/);
  // A flipped byte is caught by the CRC check; a cut file by the length check.
  const bad = png.slice();
  bad[40] = bad[40]! ^ 0xff;
  assert.throws(() => readPngText(bad), /bad CRC/);
  assert.throws(() => readPngText(png.subarray(0, 50)), /truncated/);
  assert.throws(() => readPngText(Uint8Array.of(1, 2, 3)), /not a PNG/);
});

test("APNG: every frame decodes losslessly with its delay", () => {
  const frames = [0, 1, 2].map((s) => randomRaster(9, 7, 3, 10 + s));
  const apng = encodeApng(frames, { delayMs: [50, 100, 1000], loops: 2, text: { parameters: "steps" } });
  const back = decodeApng(apng, { checkCrc: true });
  assert.equal(back.numberOfFrames, 3);
  assert.equal(back.numberOfPlays, 2);
  assert.equal(back.frames.length, 3);
  back.frames.forEach((f, i) => {
    assert.deepEqual(new Uint8Array(f.data), frames[i]!.data);
    assert.equal(f.delayNumber / f.delayDenominator, [0.05, 0.1, 1][i]);
  });
  assert.equal(readPngText(apng).parameters, "steps");
  // The first frame is also the still image.
  assert.deepEqual(decodeImage(apng).data, frames[0]!.data);
  assert.throws(() => encodeApng([frames[0]!, randomRaster(3, 3, 3, 0)]), /all frames must match/);
  assert.throws(() => encodeApng([]), /at least one frame/);
});

test("decodeImage brings 16-bit, palette and 1-bit PNGs and JPEGs to 8 bits", () => {
  const deep = encodeWithFastPng({
    width: 2,
    height: 1,
    depth: 16,
    channels: 1,
    data: Uint16Array.of(0, 65535),
  });
  assert.deepEqual(decodeImage(deep).data, Uint8Array.of(0, 255));
  const pal = encodeWithFastPng({
    width: 2,
    height: 1,
    depth: 8,
    channels: 1,
    data: Uint8Array.of(1, 0),
    palette: [
      [10, 20, 30],
      [40, 50, 60],
    ],
  });
  assert.deepEqual(decodeImage(pal), {
    width: 2,
    height: 1,
    channels: 3,
    data: Uint8Array.of(40, 50, 60, 10, 20, 30),
  });
  const bits = encodeWithFastPng({
    width: 3,
    height: 1,
    depth: 1,
    channels: 1,
    data: Uint8Array.of(0b10100000),
  });
  assert.deepEqual(decodeImage(bits).data, Uint8Array.of(255, 0, 255));
  const grey = new Uint8Array(16 * 16 * 4).fill(128);
  const jpeg = encodeJpeg({ width: 16, height: 16, data: grey }, 95).data;
  const j = decodeImage(new Uint8Array(jpeg), "x.jpg");
  assert.equal(j.channels, 3);
  assert.ok(j.data.every((v) => Math.abs(v - 128) <= 2));
  assert.throws(
    () => decodeImage(Uint8Array.of(1, 2, 3, 4), "x.txt"),
    /cannot read x\.txt: not a PNG or JPEG/,
  );
  assert.throws(
    () => decodeImage(encodePng(randomRaster(4, 4, 1, 0)).subarray(0, 40), "cut.png"),
    /cannot read cut\.png/,
  );
  assert.throws(
    () => decodeImage(encodePng(randomRaster(4, 4, 1, 0)), "big.png", { maxPixels: 10 }),
    /pixel limit/,
  );
});

test("toChannels: luma weights and alpha over black", () => {
  const rgba: Raster = {
    width: 2,
    height: 1,
    channels: 4,
    data: Uint8Array.of(255, 0, 0, 255, 200, 100, 50, 0),
  };
  assert.deepEqual(toChannels(rgba, 1).data, Uint8Array.of(76, 0));
  assert.deepEqual(toChannels(rgba, 3).data, Uint8Array.of(255, 0, 0, 0, 0, 0));
  const grey: Raster = { width: 1, height: 1, channels: 1, data: Uint8Array.of(9) };
  assert.deepEqual(toChannels(grey, 3).data, Uint8Array.of(9, 9, 9));
});

test("writePng and writeApng write files that read back", () => {
  const dir = mkdtempSync(join(tmpdir(), "diffuse-png-"));
  try {
    const img = randomRaster(5, 3, 3, 9);
    writePng(join(dir, "a.png"), img, { text: { parameters: "p" } });
    assert.deepEqual(readImage(join(dir, "a.png")), img);
    writeApng(join(dir, "b.png"), [img, img], { delayMs: 20 });
    assert.equal(decodeApng(readFileSync(join(dir, "b.png"))).frames.length, 2);
    assert.throws(() => readImage(join(dir, "none.png")), /cannot read .*none\.png/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
