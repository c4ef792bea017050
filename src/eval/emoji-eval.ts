/**
 * Judging generated emoji with the bundled emoji judge (emoji-judge.ts), for a text-to-image model
 * trained on the emoji data set's training split (src/data/emoji.ts):
 *
 * - identity top-1 / top-5: the share of images whose intended emoji (name and skin tones) is the
 *   judge's first choice / among its five first, over all 3,786 identities;
 * - vendor accuracy: the share drawn in the intended style (twitter or google);
 * - both: identity top-1 and vendor right at once;
 * - Fréchet distance in the judge's feature space between the images and the REAL images of the
 *   same prompts (each distinct prompt's one real image), next to the distance between those real
 *   images and the real images of the same emoji in the OTHER style: "drawn the right emoji in the
 *   wrong style" — the scale a held-out composition has to beat.
 *
 * `evalEmoji` asks a generator for both kinds of prompts and scores them apart: training prompts
 * (captions the model was trained on) and the held-out compositions (an emoji seen in training in
 * one style only, asked for in the other). The judge itself was trained on all real images, the
 * held-out ones included, so it knows what each composition should look like.
 */
import { type EmojiRecord, emojiCatalog, emojiRecords, loadEmoji } from "../data/emoji.ts";
import { HostTensor } from "../tensor/host.ts";
import { EmojiJudge, type EmojiJudged, TOP_K } from "./emoji-classify.ts";
import { frechetDistance, gaussianStats, sqrtPsd } from "./frechet.ts";
import { type ImageRange, spread, toUnitRange } from "./images.ts";

export type { ImageRange } from "./images.ts";

export interface EmojiScores {
  /** Number of images (samples). */
  readonly n: number;
  /** Number of distinct prompts among them. */
  readonly prompts: number;
  readonly identityTop1: number;
  readonly identityTop5: number;
  readonly vendorAccuracy: number;
  /** Identity top-1 and vendor both right. */
  readonly bothRight: number;
  /** FD(images, real images of the same prompts). */
  readonly frechet: number;
  /** FD(real images of the same emoji in the other style, real images of the prompts). */
  readonly frechetOtherVendor: number;
  /** The judge on the real images of the same prompts, for scale. */
  readonly real: {
    readonly identityTop1: number;
    readonly identityTop5: number;
    readonly vendorAccuracy: number;
  };
}

export interface EmojiTargets {
  /** Intended identity id of each image (emojiCatalog().identities). */
  readonly identities: ArrayLike<number>;
  /** Intended vendor id of each image: 0 twitter, 1 google. */
  readonly vendors: ArrayLike<number>;
}

export interface EmojiEvalOptions {
  /** A loaded judge (default: the bundled one, loaded and disposed here). */
  readonly judge?: EmojiJudge;
  /** Range of the image values (default "0,1"). */
  readonly range?: ImageRange;
}

interface Reference {
  /** The judge on all 7,572 real images, in catalog order (row = 2·identity + vendor). */
  readonly judged: EmojiJudged;
  readonly records: readonly EmojiRecord[];
}

const references = new WeakMap<EmojiJudge, Promise<Reference>>();

/** The judge's view of every real image (computed once per judge). */
function reference(judge: EmojiJudge): Promise<Reference> {
  let r = references.get(judge);
  if (!r) {
    r = (async () => {
      const s = judge.config.imageSize;
      const all = loadEmoji({ split: "all", size: s });
      return {
        judged: await judge.classify(new HostTensor(all.images, [all.count, 3, s, s])),
        records: all.records,
      };
    })();
    references.set(judge, r);
  }
  return r;
}

/** Identity and vendor hits of judged images against targets, over rows `idx`. */
function hits(j: EmojiJudged, idx: readonly number[], ids: ArrayLike<number>, vendors: ArrayLike<number>) {
  let top1 = 0;
  let top5 = 0;
  let vendor = 0;
  let both = 0;
  const v = j.vendorProbs.length / Math.max(j.n, 1);
  idx.forEach((row, i) => {
    const ranked = j.identityTop.subarray(row * TOP_K, (row + 1) * TOP_K);
    const probs = j.vendorProbs.subarray(row * v, (row + 1) * v);
    const vOk = probs[vendors[i]!] === Math.max(...probs);
    if (ranked[0] === ids[i]) {
      top1++;
      if (vOk) both++;
    }
    if (ranked.includes(ids[i]!)) top5++;
    if (vOk) vendor++;
  });
  const n = Math.max(idx.length, 1);
  return { identityTop1: top1 / n, identityTop5: top5 / n, vendorAccuracy: vendor / n, bothRight: both / n };
}

/** Rows `idx` of a row-major [*, d] array. */
function rows(data: Float32Array, idx: readonly number[], d: number): Float32Array {
  const out = new Float32Array(idx.length * d);
  idx.forEach((r, i) => {
    out.set(data.subarray(r * d, (r + 1) * d), i * d);
  });
  return out;
}

/**
 * Scores images [N, 3, H, W] (H = W a multiple of the judge's 32) against the identity and vendor
 * each was meant to show. See the file comment for the figures.
 */
export async function evaluateEmoji(
  images: HostTensor,
  targets: EmojiTargets,
  opts: EmojiEvalOptions = {},
): Promise<EmojiScores> {
  const n = images.shape[0] ?? 0;
  if (images.shape.length !== 4 || n < 2) {
    throw new Error(`evaluateEmoji needs images [N, 3, H, W] with N ≥ 2, got [${images.shape}]`);
  }
  const { identities, vendors } = targets;
  if (identities.length !== n || vendors.length !== n) {
    throw new Error(
      `got ${identities.length} identities and ${vendors.length} vendors for ${n} images; pass one each`,
    );
  }
  const catalog = emojiCatalog();
  for (let i = 0; i < n; i++) {
    const id = identities[i]!;
    const v = vendors[i]!;
    if (!Number.isInteger(id) || id < 0 || id >= catalog.identities.length) {
      throw new Error(`identity ${i} is ${id}; identity ids run from 0 to ${catalog.identities.length - 1}`);
    }
    if (v !== 0 && v !== 1) throw new Error(`vendor ${i} is ${v}; vendor ids are 0 (twitter) and 1 (google)`);
  }
  const judge = opts.judge ?? (await EmojiJudge.load());
  try {
    const ref = await reference(judge);
    const judged = await judge.classify(toUnitRange(images, opts.range));
    const f = judge.config.features;
    const all = Array.from({ length: n }, (_, i) => i);
    // each distinct prompt's real image, and the same emoji's real image in the other style
    const rowOf = (id: number, v: number) => 2 * id + v;
    const prompts = [...new Set(all.map((i) => rowOf(identities[i]!, vendors[i]!)))].sort((a, b) => a - b);
    const other = prompts.map((r) => r ^ 1);
    for (const r of [...prompts, ...other]) {
      const rec = ref.records[r]!;
      if (rowOf(rec.identityId, rec.vendorId) !== r)
        throw new Error(`emoji catalog order broken at row ${r}`);
    }
    const real = gaussianStats(rows(ref.judged.features, prompts, f), prompts.length, f);
    const sqrtReal = sqrtPsd(real.cov, f);
    const frechet = frechetDistance(real, gaussianStats(judged.features, n, f), sqrtReal);
    const frechetOtherVendor = frechetDistance(
      real,
      gaussianStats(rows(ref.judged.features, other, f), other.length, f),
      sqrtReal,
    );
    const realHits = hits(
      ref.judged,
      prompts,
      prompts.map((r) => r >> 1),
      prompts.map((r) => r & 1),
    );
    return {
      n,
      prompts: prompts.length,
      ...hits(judged, all, identities, vendors),
      frechet,
      frechetOtherVendor,
      real: {
        identityTop1: realHits.identityTop1,
        identityTop5: realHits.identityTop5,
        vendorAccuracy: realHits.vendorAccuracy,
      },
    };
  } finally {
    if (!opts.judge) judge.dispose();
  }
}

/** A text-to-image generator: prompts → images [prompts.length, 3, H, W] in `range`. */
export type GenerateImages = (prompts: string[]) => Promise<HostTensor>;

export interface EvalEmojiOptions extends EmojiEvalOptions {
  /** Prompts per split (default 475, all held-out ones; training prompts spread evenly over the split). */
  readonly prompts?: number;
  /** Images per prompt (default 1). */
  readonly samplesPerPrompt?: number;
  /** Prompts per call of `generate` (default 64). */
  readonly batchSize?: number;
  /** Called after each call of `generate`. */
  readonly onProgress?: (info: { split: "train" | "holdout"; done: number; total: number }) => void;
}

export interface EmojiEvalResult {
  /** Scores on captions the model was trained on. */
  readonly train: EmojiScores;
  /** Scores on the held-out compositions (an emoji asked for in the style it was never shown in). */
  readonly holdout: EmojiScores;
  readonly trainPrompts: readonly string[];
  readonly holdoutPrompts: readonly string[];
}

/** Generates images for training prompts and held-out compositions and scores both (see the file comment). */
export async function evalEmoji(
  generate: GenerateImages,
  opts: EvalEmojiOptions = {},
): Promise<EmojiEvalResult> {
  const per = opts.samplesPerPrompt ?? 1;
  const batch = opts.batchSize ?? 64;
  for (const [k, v] of [
    ["samplesPerPrompt", per],
    ["batchSize", batch],
  ] as const) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`${k} must be a positive integer, got ${v}`);
  }
  const judge = opts.judge ?? (await EmojiJudge.load());
  try {
    const run = async (split: "train" | "holdout"): Promise<[EmojiScores, string[]]> => {
      const recs = emojiRecords(split);
      const m = Math.min(opts.prompts ?? 475, recs.length);
      if (!Number.isInteger(m) || m < 1)
        throw new Error(`prompts must be a positive integer, got ${opts.prompts}`);
      const chosen = spread(recs.length, m).map((i) => recs[i]!);
      const wanted = chosen.flatMap((r) => Array.from({ length: per }, () => r));
      const parts: HostTensor[] = [];
      for (let at = 0; at < wanted.length; at += batch) {
        const prompts = wanted.slice(at, at + batch).map((r) => r.caption);
        const out = await generate(prompts);
        if (out.shape.length !== 4 || out.shape[0] !== prompts.length || out.dtype !== "float32") {
          throw new Error(
            `generate(${prompts.length} prompts) returned ${out.dtype} [${out.shape}]; expected float32 [${prompts.length}, 3, H, W]`,
          );
        }
        parts.push(out);
        opts.onProgress?.({ split, done: Math.min(at + batch, wanted.length), total: wanted.length });
      }
      const shape = [wanted.length, ...parts[0]!.shape.slice(1)];
      const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
      let offset = 0;
      for (const p of parts) {
        if (p.shape.slice(1).join() !== shape.slice(1).join()) {
          throw new Error(`generate returned images of shapes [${shape.slice(1)}] and [${p.shape.slice(1)}]`);
        }
        data.set(p.data as Float32Array, offset);
        offset += p.size;
      }
      const scores = await evaluateEmoji(
        new HostTensor(data, shape),
        { identities: wanted.map((r) => r.identityId), vendors: wanted.map((r) => r.vendorId) },
        { judge, range: opts.range ?? "0,1" },
      );
      return [scores, chosen.map((r) => r.caption)];
    };
    const [train, trainPrompts] = await run("train");
    const [holdout, holdoutPrompts] = await run("holdout");
    return { train, holdout, trainPrompts, holdoutPrompts };
  } finally {
    if (!opts.judge) judge.dispose();
  }
}

/** The figures as a small table. */
export function formatEmojiReport(r: EmojiEvalResult, source: string): string {
  const pct = (v: number) => `${(100 * v).toFixed(1)}%`;
  const row = (name: string, ...cells: string[]) =>
    `  ${name.padEnd(22)}${cells.map((c) => c.padStart(12)).join("")}`;
  const s = [r.train, r.holdout];
  return [
    `emoji judge: ${source}`,
    row("", "train", "held out", "real (t/h)"),
    row(
      "identity top-1",
      ...s.map((x) => pct(x.identityTop1)),
      `${pct(r.train.real.identityTop1)}/${pct(r.holdout.real.identityTop1)}`,
    ),
    row(
      "identity top-5",
      ...s.map((x) => pct(x.identityTop5)),
      `${pct(r.train.real.identityTop5)}/${pct(r.holdout.real.identityTop5)}`,
    ),
    row(
      "vendor",
      ...s.map((x) => pct(x.vendorAccuracy)),
      `${pct(r.train.real.vendorAccuracy)}/${pct(r.holdout.real.vendorAccuracy)}`,
    ),
    row("identity and vendor", ...s.map((x) => pct(x.bothRight))),
    row("Fréchet distance", ...s.map((x) => x.frechet.toFixed(2))),
    row("  real, other style", ...s.map((x) => x.frechetOtherVendor.toFixed(2))),
    `  ${r.train.n} + ${r.holdout.n} images of ${r.train.prompts} training prompts and ${r.holdout.prompts} held-out compositions`,
  ].join("\n");
}
