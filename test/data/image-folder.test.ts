import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { encode as encodeJpeg } from "jpeg-js";
import { loadImageFolder } from "../../src/data/image-folder.ts";
import { resizeCrop } from "../../src/data/resize.ts";
import { encodePng } from "../../src/io/png.ts";
import type { Raster } from "../../src/io/raster.ts";

function solid(width: number, height: number, rgb: [number, number, number]): Raster {
  const data = new Uint8Array(width * height * 3);
  for (let i = 0; i < width * height; i++) data.set(rgb, i * 3);
  return { width, height, channels: 3, data };
}

function withTmp(body: (dir: string) => void): () => void {
  return () => {
    const dir = mkdtempSync(join(tmpdir(), "diffuse-folder-"));
    try {
      body(dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
}

test("resizeCrop: area averages, crops the centre, bilinear interpolates", () => {
  // 4×2 grey: columns 0, 100, 200, 255 → centre-crop to 2×2 (columns 1–2) → 1×1 area = mean.
  const g: Raster = {
    width: 4,
    height: 2,
    channels: 1,
    data: Uint8Array.of(0, 100, 200, 255, 0, 100, 200, 255),
  };
  assert.ok(Math.abs(resizeCrop(g, 1, 1, "area")[0]! - 150 / 255) < 1e-6);
  // Halving a 4×4 ramp by area averages 2×2 blocks.
  const ramp: Raster = {
    width: 4,
    height: 4,
    channels: 1,
    data: Uint8Array.from({ length: 16 }, (_, i) => i * 10),
  };
  const half = Array.from(resizeCrop(ramp, 2, 2, "area"), (v) => Math.round(v * 255));
  assert.deepEqual(half, [25, 45, 105, 125]);
  // Doubling 1×2 (0, 255) bilinearly: centres at 0.5-pixel offsets.
  const two: Raster = { width: 2, height: 1, channels: 1, data: Uint8Array.of(0, 255) };
  const up = Array.from(resizeCrop(two, 1, 4, "bilinear"), (v) => v * 255);
  assert.deepEqual(
    up.map((v) => Math.round(v * 100) / 100),
    [0, 63.75, 191.25, 255],
  );
  // RGB → planar [C, H, W].
  const rgb = resizeCrop(solid(3, 5, [255, 0, 51]), 2, 2);
  assert.deepEqual(
    Array.from(rgb, (v) => Math.round(v * 255)),
    [255, 255, 255, 255, 0, 0, 0, 0, 51, 51, 51, 51],
  );
});

test(
  "class sub-folders give labels; PNG and JPEG files load resized and centre-cropped",
  withTmp((dir) => {
    mkdirSync(join(dir, "cats", "deep"), { recursive: true });
    mkdirSync(join(dir, "dogs"));
    writeFileSync(join(dir, "cats", "a.png"), encodePng(solid(10, 6, [255, 0, 0])));
    writeFileSync(join(dir, "cats", "deep", "b.PNG"), encodePng(solid(4, 4, [0, 255, 0])));
    const jpeg = encodeJpeg({ width: 16, height: 16, data: new Uint8Array(16 * 16 * 4).fill(200) }, 95).data;
    writeFileSync(join(dir, "dogs", "c.jpg"), jpeg);
    writeFileSync(join(dir, "dogs", "notes.txt"), "ignored");
    writeFileSync(join(dir, "dogs", ".hidden.png"), "ignored");
    const ds = loadImageFolder(dir, { size: 8 });
    assert.equal(ds.count, 3);
    assert.deepEqual([ds.channels, ds.height, ds.width], [3, 8, 8]);
    assert.deepEqual(ds.classNames, ["cats", "dogs"]);
    assert.deepEqual(ds.labels, Int32Array.of(0, 0, 1));
    const px = (k: number, c: number) => ds.images[k * 192 + c * 64 + 27]!;
    assert.deepEqual([px(0, 0), px(0, 1), px(0, 2)], [1, 0, 0]);
    assert.deepEqual([px(1, 0), px(1, 1), px(1, 2)], [0, 1, 0]);
    assert.ok(Math.abs(px(2, 1) - 200 / 255) < 0.02);
    const grey = loadImageFolder(dir, { size: [4, 6], channels: 1, classes: false, resample: "bilinear" });
    assert.equal(grey.labels, null);
    assert.deepEqual([grey.count, grey.channels, grey.height, grey.width], [3, 1, 4, 6]);
    assert.ok(Math.abs(grey.images[0]! - 76 / 255) < 1e-6, "red → luma 0.299");
  }),
);

test(
  "clear errors: empty folder, unreadable file, images beside class folders",
  withTmp((dir) => {
    assert.throws(() => loadImageFolder(dir, { size: 4 }), /has no PNG or JPEG images/);
    assert.throws(() => loadImageFolder(join(dir, "missing"), { size: 4 }), /cannot read image folder/);
    writeFileSync(join(dir, "broken.png"), "not really a png");
    assert.throws(() => loadImageFolder(dir, { size: 4 }), /cannot read .*broken\.png: not a PNG or JPEG/);
    writeFileSync(join(dir, "broken.png"), encodePng(solid(4, 4, [1, 2, 3])).subarray(0, 45));
    assert.throws(() => loadImageFolder(dir, { size: 4 }), /cannot read .*broken\.png: bad PNG data/);
    rmSync(join(dir, "broken.png"));
    mkdirSync(join(dir, "empty-class"));
    assert.throws(() => loadImageFolder(dir, { size: 4 }), /class folder .*empty-class has no PNG or JPEG/);
    mkdirSync(join(dir, "a"));
    writeFileSync(join(dir, "a", "x.png"), encodePng(solid(2, 2, [0, 0, 0])));
    writeFileSync(join(dir, "stray.png"), encodePng(solid(2, 2, [0, 0, 0])));
    assert.throws(() => loadImageFolder(dir, { size: 4 }), /images beside its class folders/);
    assert.throws(() => loadImageFolder(dir, { size: 0 }), /positive integers/);
  }),
);
