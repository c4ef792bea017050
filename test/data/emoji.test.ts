import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { checkDataset } from "../../src/data/dataset.ts";
import {
  compositeOnWhite,
  EMOJI_HOLDOUT_FILE,
  emojiCatalog,
  emojiPrompts,
  emojiRecords,
  loadEmoji,
} from "../../src/data/emoji.ts";
import { emojiCaption, emojiIdentity, parseEmojiCaption, tonesOfKey } from "../../src/data/emoji-caption.ts";

test("emoji catalog: 3,786 identities, each drawn once by each vendor; the holdout is 475 images", () => {
  const c = emojiCatalog();
  assert.deepEqual(c.versions, { twitter: "16.0.0", google: "16.0.0" });
  assert.equal(c.records.length, 7572);
  assert.equal(c.identities.length, 3786);
  assert.equal(new Set(c.identities).size, 3786);
  c.records.forEach((r, i) => {
    assert.equal(r.identityId, i >> 1);
    assert.equal(r.vendorId, i & 1);
    assert.equal(r.vendor, r.vendorId === 0 ? "twitter" : "google");
    assert.equal(c.identities[r.identityId], r.identity);
    assert.equal(r.caption, `${r.identity}, ${r.vendor} style`);
    assert.deepEqual(parseEmojiCaption(r.caption), { name: r.name, tones: r.tones, vendor: r.vendor });
  });
  assert.equal(new Set(c.records.map((r) => r.caption)).size, 7572);
  const holdout = JSON.parse(readFileSync(EMOJI_HOLDOUT_FILE, "utf8")) as Record<string, string[]>;
  assert.equal(emojiRecords("holdout", ["google"]).length, holdout["google"]!.length);
  assert.equal(emojiRecords("holdout", ["twitter"]).length, holdout["twitter"]!.length);
  assert.equal(emojiRecords("holdout").length, 183 + 292);
  assert.equal(emojiRecords("train").length, 7572 - 475);
  assert.equal(emojiPrompts("train").length, 7097);
  assert.equal(emojiPrompts("holdout").length, 475);
});

test("emoji holdout: no held-out file in train; every held-out identity is trained in the other style", () => {
  const held = emojiRecords("holdout");
  const train = emojiRecords("train");
  const heldPairs = new Set(held.map((r) => `${r.vendor}/${r.file}`));
  for (const r of train)
    assert.ok(!heldPairs.has(`${r.vendor}/${r.file}`), `${r.vendor}/${r.file} is held out`);
  const trained = new Set(train.map((r) => `${r.identityId}/${r.vendorId}`));
  for (const r of held) {
    assert.ok(trained.has(`${r.identityId}/${1 - r.vendorId}`), `"${r.identity}" has no training image`);
    assert.ok(!trained.has(`${r.identityId}/${r.vendorId}`));
  }
  // held out per base emoji: all skin tones of a held-out emoji go together
  const heldBases = new Set(held.map((r) => `${r.vendor}/${r.name}`));
  for (const r of train) assert.ok(!heldBases.has(`${r.vendor}/${r.name}`), `${r.caption} in train`);
});

test("emoji captions: the template, tones from the modifiers, the tuxedo name clash", () => {
  assert.equal(
    emojiCaption({ name: "thumbs up sign", tones: ["medium"], vendor: "google" }),
    "thumbs up sign, medium skin tone, google style",
  );
  assert.equal(
    emojiCaption({ name: "father christmas", vendor: "twitter" }),
    "father christmas, twitter style",
  );
  assert.equal(
    emojiIdentity("people holding hands", ["light", "dark"]),
    "people holding hands, light and dark skin tones",
  );
  assert.deepEqual(tonesOfKey("1F3FB-1F3FF"), ["light", "dark"]);
  assert.deepEqual(tonesOfKey("1F3FE-1F3FE"), ["medium-dark"]);
  assert.throws(() => tonesOfKey("1F3FA"), /not a Fitzpatrick modifier/);
  assert.throws(() => emojiCaption({ name: "x", vendor: "apple" as "google" }), /unknown emoji vendor/);
  assert.throws(() => parseEmojiCaption("a cat"), /not an emoji caption/);
  assert.deepEqual(parseEmojiCaption("family: man, woman, boy, google style"), {
    name: "family: man, woman, boy",
    tones: [],
    vendor: "google",
  });
  const byCaption = new Map(emojiCatalog().records.map((r) => [r.caption, r]));
  assert.equal(byCaption.get("thumbs up sign, medium skin tone, google style")?.file, "1f44d-1f3fd.png");
  assert.equal(byCaption.get("father christmas, twitter style")?.file, "1f385.png");
  assert.equal(byCaption.get("person in tuxedo, google style")?.file, "1f935.png");
  assert.equal(byCaption.get("man in tuxedo, google style")?.file, "1f935-200d-2642-fe0f.png");
  assert.equal(
    byCaption.get("people holding hands, light and dark skin tones, twitter style")?.file,
    "1f9d1-1f3fb-200d-1f91d-200d-1f9d1-1f3ff.png",
  );
  assert.equal(byCaption.get("handshake, dark skin tone, google style")?.file, "1f91d-1f3ff.png");
});

test("loadEmoji: RGB on white in [0, 1], ids consistent with the catalog, area resize", () => {
  const d = loadEmoji({ split: "holdout" });
  checkDataset(d, "emoji holdout");
  assert.equal(d.count, 475);
  assert.deepEqual([d.channels, d.height, d.width], [3, 64, 64]);
  assert.equal(d.labels, d.identities);
  assert.equal(d.classNames.length, 3786);
  let lo = 1;
  let hi = 0;
  for (const v of d.images) {
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  assert.ok(lo >= 0 && lo < 0.1 && hi === 1, `values span [${lo}, ${hi}]`);
  const per = 3 * 64 * 64;
  let whiteCorners = 0;
  for (let i = 0; i < d.count; i++) {
    const r = d.records[i]!;
    assert.equal(d.captions[i], r.caption);
    assert.equal(d.classNames[d.identities[i]!], r.identity);
    assert.equal(d.vendors[i], r.vendorId);
    assert.equal(d.files[i], r.file);
    assert.equal(d.categories[i], r.category);
    if ([0, 1, 2].every((c) => d.images[i * per + c * 4096] === 1)) whiteCorners++;
  }
  // most emoji leave their corners transparent: composited over white (a few fill them)
  assert.ok(whiteCorners > 0.85 * d.count, `${whiteCorners} of ${d.count} corners are white`);
  const small = loadEmoji({ split: "holdout", size: 32, vendors: ["google"] });
  assert.equal(small.count, 183);
  const i64 = d.files.indexOf(small.files[0]!);
  assert.equal(d.vendors[i64], 1);
  let worst = 0;
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < 32; y++) {
      for (let x = 0; x < 32; x++) {
        const at = (yy: number, xx: number) => d.images[i64 * per + c * 4096 + yy * 64 + xx]!;
        const mean =
          (at(2 * y, 2 * x) + at(2 * y, 2 * x + 1) + at(2 * y + 1, 2 * x) + at(2 * y + 1, 2 * x + 1)) / 4;
        worst = Math.max(worst, Math.abs(mean - small.images[c * 1024 + y * 32 + x]!));
      }
    }
  }
  assert.ok(worst < 1e-6, `2×2 area mean differs by ${worst}`);
});

test("compositeOnWhite: c·a + 1·(1 − a), grey repeated into RGB", () => {
  const rgba = compositeOnWhite({
    width: 3,
    height: 1,
    channels: 4,
    data: Uint8Array.of(10, 20, 30, 0, 10, 20, 30, 255, 0, 100, 200, 51),
  });
  assert.deepEqual([...rgba.data], [255, 255, 255, 10, 20, 30, 204, 224, 244]);
  const ga = compositeOnWhite({ width: 1, height: 1, channels: 2, data: Uint8Array.of(0, 102) });
  assert.deepEqual([...ga.data], [153, 153, 153]);
});

test("loadEmoji: a known image, and clear errors", () => {
  const d = loadEmoji({ split: "all", vendors: ["google"] });
  assert.equal(d.count, 3786);
  const i = d.captions.indexOf("thumbs up sign, medium skin tone, google style");
  assert.equal(d.files[i], "1f44d-1f3fd.png");
  const plane = 64 * 64;
  const centre = 32 * 64 + 32;
  const rgb = [0, 1, 2].map((c) => d.images[i * 3 * plane + c * plane + centre]!);
  for (let c = 0; c < 3; c++)
    assert.equal(d.images[i * 3 * plane + c * plane], 1, "a transparent corner is white");
  assert.ok(
    rgb.some((v) => v < 0.95),
    `the centre of the thumb is not white: ${rgb}`,
  );
  assert.throws(() => loadEmoji({ split: "test" as "train" }), /split must be "train", "holdout" or "all"/);
  assert.throws(() => loadEmoji({ size: 0 }), /emoji size must be an integer/);
  assert.throws(() => loadEmoji({ vendors: ["apple" as "google"] }), /unknown emoji vendor "apple"/);
});
