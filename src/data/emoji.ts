/**
 * Emoji in two styles, from the npm packages `emoji-datasource-twitter` and `emoji-datasource-google`
 * (iamcal/emoji-data v16.0.0: Twemoji 16.0.1, CC-BY 4.0; Noto Emoji 2.048, Apache 2.0). Each package
 * has `emoji.json` (1,911 emoji, 1,875 skin variations) and `img/<vendor>/64/<file>.png`: 3,786
 * RGBA 64×64 images per vendor, 7,572 in all, one per (identity, vendor).
 *
 * Each image is composited over WHITE (transparent pixels become 1.0; an emoji sits on a page, not
 * in the dark), optionally resized (area filter, resize.ts), and stored as RGB [3, S, S] in [0, 1]
 * like every ImageDataset (the trainer maps it to [−1, 1]). Its caption follows the one template
 * of emoji-caption.ts. Its identity is the caption without ", <vendor> style" — an integer id over
 * the whole catalog (both vendors, every split), in emoji.json order, each base emoji followed by
 * its skin variations; `labels` are these ids and `classNames` their strings.
 *
 * Names are emoji.json's `name` lower-cased. One name is shared by two emoji ("MAN IN TUXEDO" is
 * both U+1F935 and its ♂ sequence); where names collide, each emoji whose `short_name` (underscores
 * as spaces) differs from its name is captioned by the short name ("person in tuxedo").
 *
 * The holdout (assets/data/emoji-holdout.json, fixed once for the project from a salted hash of each
 * base emoji's short_name: use the file, never recompute it): for about 6% of the base emoji the
 * Google images (with all their skin tones) are held out, for another 6% the Twitter ones. A
 * held-out emoji is seen in training in ONE vendor's style only, and is asked for in the other's:
 * a test of composing identity and style. `split: "train"` leaves out
 * every held-out (vendor, file) pair; `split: "holdout"` is exactly those.
 */

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { readImage } from "../io/image-decode.ts";
import type { Raster } from "../io/raster.ts";
import type { ImageDataset } from "./dataset.ts";
import {
  EMOJI_VENDORS,
  type EmojiVendor,
  emojiCaption,
  emojiIdentity,
  type SkinTone,
  tonesOfKey,
} from "./emoji-caption.ts";
import { type ResampleMethod, resizeCrop } from "./resize.ts";

/** The side of the packages' images. */
export const EMOJI_SIZE = 64;

/** The held-out (vendor, file) pairs, shipped with the package (src/data/ and dist/data/ alike). */
export const EMOJI_HOLDOUT_FILE = fileURLToPath(
  new URL("../../assets/data/emoji-holdout.json", import.meta.url),
);

export type EmojiSplit = "train" | "holdout" | "all";

/** One image of the catalog. */
export interface EmojiRecord {
  /** The image file in `img/<vendor>/64/`, e.g. "1f44d-1f3fd.png". */
  readonly file: string;
  /** Code points, e.g. "1F44D-1F3FD". */
  readonly unified: string;
  /** Lower-cased Unicode name, e.g. "thumbs up sign". */
  readonly name: string;
  readonly tones: readonly SkinTone[];
  /** The caption without its vendor, e.g. "thumbs up sign, medium skin tone". */
  readonly identity: string;
  readonly identityId: number;
  readonly vendor: EmojiVendor;
  /** Index in EMOJI_VENDORS: 0 twitter, 1 google. */
  readonly vendorId: number;
  /** emoji.json's category, e.g. "People & Body". */
  readonly category: string;
  /** e.g. "thumbs up sign, medium skin tone, google style". */
  readonly caption: string;
  /** Whether the image is held out (never trained on). */
  readonly holdout: boolean;
}

export interface EmojiCatalog {
  /** Every image of both vendors, ordered by identity id, then vendor id. */
  readonly records: readonly EmojiRecord[];
  /** Identity id → identity string. */
  readonly identities: readonly string[];
  /** Package version of each vendor's data. */
  readonly versions: Readonly<Record<EmojiVendor, string>>;
}

interface RawVariation {
  readonly unified: string;
  readonly image: string;
  readonly [hasImg: string]: unknown;
}

interface RawEmoji {
  readonly name: string | null;
  readonly short_name: string;
  readonly unified: string;
  readonly image: string;
  readonly category: string;
  readonly skin_variations?: Readonly<Record<string, RawVariation>>;
  readonly [hasImg: string]: unknown;
}

/** The root folder of a vendor's package. */
export function emojiPackageDir(vendor: EmojiVendor): string {
  const pkg = `emoji-datasource-${vendor}`;
  try {
    return dirname(createRequire(import.meta.url).resolve(`${pkg}/package.json`));
  } catch (err) {
    throw new Error(`the emoji data needs the \`${pkg}\` npm package: run \`npm install ${pkg}@16.0.0\``, {
      cause: err,
    });
  }
}

/** The folder of a vendor's 64×64 images. */
export function emojiImageDir(vendor: EmojiVendor): string {
  return join(emojiPackageDir(vendor), "img", vendor, "64");
}

function readJson(path: string): unknown {
  try {
    return JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw new Error(`cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
}

/** The held-out files of each vendor, checked. */
function readHoldout(path: string): Record<EmojiVendor, Set<string>> {
  const raw = readJson(path) as Record<string, unknown>;
  const out = {} as Record<EmojiVendor, Set<string>>;
  for (const v of EMOJI_VENDORS) {
    const list = raw[v];
    if (!Array.isArray(list) || !list.every((f) => typeof f === "string")) {
      throw new Error(`${path}: "${v}" must be a list of image file names`);
    }
    out[v] = new Set(list as string[]);
  }
  return out;
}

/** Names, disambiguated where two emoji share one (see the file comment). */
function captionNames(entries: readonly RawEmoji[], where: string): string[] {
  const names = entries.map((e) => {
    if (typeof e.name === "string" && e.name.trim() !== "") return e.name.trim().toLowerCase();
    if (typeof e.short_name === "string" && e.short_name !== "") return e.short_name.replaceAll("_", " ");
    throw new Error(`${where}: emoji ${e.unified} has neither a name nor a short_name`);
  });
  const count = new Map<string, number>();
  for (const n of names) count.set(n, (count.get(n) ?? 0) + 1);
  return names.map((n, i) => {
    const short = entries[i]!.short_name.replaceAll("_", " ");
    return count.get(n)! > 1 && short !== n ? short : n;
  });
}

let catalog: EmojiCatalog | null = null;

/** The catalog of both vendors' images (read once per process; no pixels). */
export function emojiCatalog(): EmojiCatalog {
  if (catalog) return catalog;
  const holdout = readHoldout(EMOJI_HOLDOUT_FILE);
  const identityIds = new Map<string, number>();
  const identities: string[] = [];
  const records: EmojiRecord[] = [];
  const versions = {} as Record<EmojiVendor, string>;
  EMOJI_VENDORS.forEach((vendor, vendorId) => {
    const dir = emojiPackageDir(vendor);
    versions[vendor] = (readJson(join(dir, "package.json")) as { version: string }).version;
    const where = join(dir, "emoji.json");
    const entries = readJson(where) as RawEmoji[];
    if (!Array.isArray(entries)) throw new Error(`${where}: expected a list of emoji`);
    const names = captionNames(entries, where);
    const seen = new Set<string>();
    const add = (e: RawEmoji, v: RawEmoji | RawVariation, name: string, tones: SkinTone[]) => {
      if (v[`has_img_${vendor}`] !== true) return; // the vendor draws no image for it
      const identity = emojiIdentity(name, tones);
      if (seen.has(identity)) throw new Error(`${where}: two ${vendor} images are captioned "${identity}"`);
      seen.add(identity);
      let identityId = identityIds.get(identity);
      if (identityId === undefined) {
        identityId = identities.length;
        identityIds.set(identity, identityId);
        identities.push(identity);
      }
      records.push({
        file: v.image,
        unified: v.unified,
        name,
        tones,
        identity,
        identityId,
        vendor,
        vendorId,
        category: e.category,
        caption: emojiCaption({ name, tones, vendor }),
        holdout: holdout[vendor].has(v.image),
      });
    };
    entries.forEach((e, i) => {
      add(e, e, names[i]!, []);
      for (const [key, v] of Object.entries(e.skin_variations ?? {})) add(e, v, names[i]!, tonesOfKey(key));
    });
    const files = new Set(records.filter((r) => r.vendor === vendor).map((r) => r.file));
    for (const f of holdout[vendor]) {
      if (!files.has(f)) {
        throw new Error(`${EMOJI_HOLDOUT_FILE}: held-out ${vendor} image ${f} is not in ${where}`);
      }
    }
  });
  records.sort((a, b) => a.identityId - b.identityId || a.vendorId - b.vendorId);
  catalog = { records, identities, versions };
  return catalog;
}

function checkSplit(split: string): asserts split is EmojiSplit {
  if (!["train", "holdout", "all"].includes(split)) {
    throw new Error(`emoji split must be "train", "holdout" or "all", got ${JSON.stringify(split)}`);
  }
}

/** The catalog records of a split (and of some vendors). */
export function emojiRecords(
  split: EmojiSplit = "all",
  vendors: readonly EmojiVendor[] = EMOJI_VENDORS,
): EmojiRecord[] {
  checkSplit(split);
  for (const v of vendors) {
    if (!(EMOJI_VENDORS as readonly string[]).includes(v)) {
      throw new Error(`unknown emoji vendor ${JSON.stringify(v)}; expected ${EMOJI_VENDORS.join(" or ")}`);
    }
  }
  return emojiCatalog().records.filter(
    (r) => vendors.includes(r.vendor) && (split === "all" || r.holdout === (split === "holdout")),
  );
}

/** The captions of a split: the training prompts, or the held-out compositions to evaluate. */
export function emojiPrompts(split: EmojiSplit): string[] {
  return emojiRecords(split).map((r) => r.caption);
}

/** An 8-bit raster composited over white, as RGB (grey is repeated into three channels). */
export function compositeOnWhite(r: Raster): Raster {
  const n = r.width * r.height;
  const cin = r.channels;
  const src = r.data;
  const out = new Uint8Array(n * 3);
  const alpha = cin === 2 || cin === 4;
  const colour = cin >= 3 ? 3 : 1;
  for (let i = 0; i < n; i++) {
    const p = i * cin;
    const a = alpha ? src[p + cin - 1]! : 255;
    for (let c = 0; c < 3; c++) {
      const v = src[p + (colour === 3 ? c : 0)]!;
      out[i * 3 + c] = Math.round((v * a + 255 * (255 - a)) / 255);
    }
  }
  return { width: r.width, height: r.height, channels: 3, data: out };
}

export interface EmojiOptions {
  /** "train" (no held-out image), "holdout" (only those) or "all". Default "train". */
  readonly split?: EmojiSplit;
  /** Side of the square output (the images are 64×64; smaller sides are area-resized). Default 64. */
  readonly size?: number;
  /** Which vendors' images (default both). */
  readonly vendors?: readonly EmojiVendor[];
  /** Resampling filter when resizing (default "area"). */
  readonly resample?: ResampleMethod;
}

/** An ImageDataset whose labels are identity ids, with each image's caption, vendor and file. */
export interface EmojiDataset extends ImageDataset {
  readonly labels: Int32Array;
  /** Identity id → identity string (every identity of the catalog, whatever the split). */
  readonly classNames: readonly string[];
  readonly captions: readonly string[];
  /** Identity id of each image (the same array as `labels`). */
  readonly identities: Int32Array;
  /** Vendor id of each image: 0 twitter, 1 google. */
  readonly vendors: Int32Array;
  readonly categories: readonly string[];
  readonly files: readonly string[];
  readonly records: readonly EmojiRecord[];
}

/** Loads the emoji images of a split into memory (deterministic; about 2 s for all 7,572 on one core). */
export function loadEmoji(options: EmojiOptions = {}): EmojiDataset {
  const split = options.split ?? "train";
  const size = options.size ?? EMOJI_SIZE;
  if (!Number.isInteger(size) || size < 1 || size > 1024) {
    throw new Error(`emoji size must be an integer side from 1 to 1024 (the images are 64×64), got ${size}`);
  }
  const records = emojiRecords(split, options.vendors ?? EMOJI_VENDORS);
  const per = 3 * size * size;
  const images = new Float32Array(records.length * per);
  const method = options.resample ?? "area";
  const dirs = new Map(EMOJI_VENDORS.map((v) => [v, emojiImageDir(v)]));
  records.forEach((r, i) => {
    const path = join(dirs.get(r.vendor)!, r.file);
    const rgb = compositeOnWhite(readImage(path));
    if (rgb.width === size && rgb.height === size) {
      const plane = size * size;
      for (let p = 0; p < plane; p++) {
        for (let c = 0; c < 3; c++) images[i * per + c * plane + p] = rgb.data[p * 3 + c]! / 255;
      }
    } else {
      resizeCrop(rgb, size, size, method, images, i * per);
    }
  });
  const identities = Int32Array.from(records, (r) => r.identityId);
  return {
    count: records.length,
    channels: 3,
    height: size,
    width: size,
    images,
    labels: identities,
    classNames: emojiCatalog().identities,
    captions: records.map((r) => r.caption),
    identities,
    vendors: Int32Array.from(records, (r) => r.vendorId),
    categories: records.map((r) => r.category),
    files: records.map((r) => r.file),
    records,
  };
}
