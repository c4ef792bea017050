/**
 * Training the emoji judge (emoji-judge.ts) with the engine on ALL 7,572 emoji images, the held-out
 * ones included: the judge is not the generator, and to recognise "a Google-style X" that no
 * generator was shown it must itself have seen Google's X. The loss is cross-entropy on identity
 * plus cross-entropy on vendor; AdamW, linear warm-up then cosine decay (cosineLr), dropout on the
 * features (dropoutMask), and small random affine moves of each image (augment.ts, filling with
 * white), so that the judge reads emoji that are drawn a little off-centre, smaller or tilted, as
 * generated ones may be. Then the identity head is imprinted (`imprintIdentities`; see
 * emoji-judge.ts). With two images per identity there is no unseen real image to test on: the
 * figures are the accuracies on fresh random distortions of every image (`judgeAccuracy`).
 */
import type { EmojiDataset } from "../data/emoji.ts";
import { loadEmoji } from "../data/emoji.ts";
import { DataLoader } from "../data/loader.ts";
import { crossEntropy } from "../nn/index.ts";
import type { SessionOptions } from "../runtime/options.ts";
import { HostTensor } from "../tensor/host.ts";
import * as o from "../tensor/ops.ts";
import { initParams, type Params } from "../tensor/params.ts";
import { Rng } from "../tensor/rng.ts";
import { compileTrainStep, paramSpecsOf } from "../train/train-step.ts";
import { type Distortion, randomDistort } from "./augment.ts";
import { EmojiJudge, TOP_K } from "./emoji-classify.ts";
import { defaultEmojiJudgeConfig, type EmojiJudgeConfig, emojiJudge } from "./emoji-judge.ts";
import { cosineLr, dropoutMask } from "./train-classifier.ts";

/** Mild moves: emoji are drawn upright and centred; no elastic warp (it would bend flags and letters). */
export const emojiDistortion: Distortion = {
  degrees: 8,
  scale: 0.1,
  shift: 1.5,
  elasticAlpha: 0,
  elasticSigma: 4,
};

export interface TrainEmojiJudgeOptions {
  readonly steps: number;
  readonly batchSize?: number;
  readonly seed?: number;
  /** Peak learning rate (default 3e-3). */
  readonly lr?: number;
  readonly warmupSteps?: number;
  readonly weightDecay?: number;
  /** Random distortions of the training images (default `emojiDistortion`; pixels in this size). */
  readonly distortion?: Distortion;
  /** Dropout rate on the features before the heads (default 0.1). */
  readonly dropout?: number;
  readonly config?: EmojiJudgeConfig;
  /** The images at the config's size (default: `loadEmoji({ split: "all", size })`). */
  readonly dataset?: EmojiDataset;
  /** Distorted views of each image, besides the image itself, that imprint the identity head (default 4; 0: no imprinting). */
  readonly imprintViews?: number;
  /** Intra-op threads for the sessions (default: all cores). */
  readonly threads?: number;
  /** Called every `logEvery` steps and at the last one. */
  readonly onLog?: (info: { step: number; loss: number; lr: number; seconds: number }) => void;
  readonly logEvery?: number;
}

export interface TrainedEmojiJudge {
  readonly config: EmojiJudgeConfig;
  readonly params: Params;
  readonly steps: number;
  readonly seconds: number;
  /** Mean training loss (identity + vendor) over the last 10% of steps. */
  readonly finalLoss: number;
}

/** Trains the judge from a seeded initialization; deterministic for a given seed and thread count. */
export async function trainEmojiJudge(opts: TrainEmojiJudgeOptions): Promise<TrainedEmojiJudge> {
  const config = opts.config ?? defaultEmojiJudgeConfig;
  const batchSize = opts.batchSize ?? 128;
  const seed = opts.seed ?? 0;
  const peak = opts.lr ?? 3e-3;
  const warmup = opts.warmupSteps ?? Math.min(100, Math.floor(opts.steps / 10));
  const distortion = opts.distortion ?? emojiDistortion;
  const dropout = opts.dropout ?? 0.1;
  const s = config.imageSize;
  const data = opts.dataset ?? loadEmoji({ split: "all", size: s });
  if (data.height !== s || data.width !== s) {
    throw new Error(`the emoji judge trains at ${s}×${s}, but the dataset is ${data.height}×${data.width}`);
  }
  if (data.classNames.length !== config.identities) {
    throw new Error(`the judge has ${config.identities} identities, the data ${data.classNames.length}`);
  }
  const rng = new Rng(seed);
  const session = opts.threads === undefined ? {} : { threads: opts.threads };
  const loader = new DataLoader(data, { batchSize, rng: rng.fold("data") });
  const augment = rng.fold("augment");
  const step = await compileTrainStep(
    (scope, b) => {
      const out = emojiJudge(scope, b["images"]!, config, b["keep"]);
      const identity = crossEntropy(out.identity, b["labels"]!);
      const vendor = crossEntropy(out.vendor, b["vendors"]!);
      return { loss: o.add(identity, vendor), metrics: { identity, vendor } };
    },
    {
      images: { shape: [batchSize, 3, s, s] },
      labels: { shape: [batchSize], dtype: "int64" },
      vendors: { shape: [batchSize], dtype: "int64" },
      keep: { shape: [batchSize, config.features] },
    },
    { ema: false, adamw: { weightDecay: opts.weightDecay ?? 0.01 }, session },
  );
  try {
    const specs = paramSpecsOf((scope, g) => emojiJudge(scope, g.input("x", [1, 3, s, s]), config));
    const state = step.initState(initParams(specs, rng.fold("init")));
    const started = performance.now();
    const losses: number[] = [];
    for (let t = 1; t <= opts.steps; t++) {
      const batch = loader.next();
      const lr = cosineLr(t, opts.steps, peak, warmup);
      const vendors = HostTensor.int64(
        Array.from(batch.indices, (i) => data.vendors[i]!),
        [batchSize],
      );
      const r = await step.step(
        state,
        {
          images: randomDistort(batch.images, distortion, augment, 1),
          labels: batch.labels!,
          vendors,
          keep: dropoutMask(batchSize, config.features, dropout, augment),
        },
        lr,
      );
      losses.push(r.loss);
      if (!Number.isFinite(r.loss))
        throw new Error(`emoji judge training diverged at step ${t} (loss ${r.loss})`);
      if (opts.onLog && (t % (opts.logEvery ?? 100) === 0 || t === opts.steps)) {
        opts.onLog({ step: t, loss: r.loss, lr, seconds: (performance.now() - started) / 1000 });
      }
    }
    await step.sync(state);
    const tail = losses.slice(-Math.max(1, Math.floor(losses.length / 10)));
    const views = opts.imprintViews ?? 4;
    const params =
      views > 0
        ? await imprintIdentities(config, state.params, data, {
            views,
            distortion,
            rng: rng.fold("imprint"),
            session,
          })
        : state.params;
    return {
      config,
      params,
      steps: opts.steps,
      seconds: (performance.now() - started) / 1000,
      finalLoss: tail.reduce((a, b) => a + b, 0) / tail.length,
    };
  } finally {
    step.dispose();
  }
}

/**
 * Imprints the identity head (Qi, Brown & Lowe 2018): row i of `identity.weight` becomes the mean
 * of the unit feature vectors φ/‖φ‖ of identity i's images — each image as it is and in `views`
 * random distortions — so the cosine head ranks identities by closeness to their real images.
 * Identities with no image in `data` keep their trained row.
 */
export async function imprintIdentities(
  config: EmojiJudgeConfig,
  params: Params,
  data: EmojiDataset,
  opts: { views: number; distortion: Distortion; rng: Rng; session?: SessionOptions },
): Promise<Params> {
  const judge = await EmojiJudge.create(config, params, opts.session ? { session: opts.session } : {});
  const f = config.features;
  const sums = new Float64Array(config.identities * f);
  try {
    const images: HostTensor<"float32"> = new HostTensor(data.images, [
      data.count,
      3,
      data.height,
      data.width,
    ]);
    for (let view = 0; view <= opts.views; view++) {
      const x = view === 0 ? images : randomDistort(images, opts.distortion, opts.rng.fold(view), 1);
      const { features } = await judge.classify(x);
      for (let i = 0; i < data.count; i++) {
        const row = features.subarray(i * f, (i + 1) * f);
        let norm = 0;
        for (const v of row) norm += v * v;
        norm = Math.sqrt(norm) || 1;
        const at = data.identities[i]! * f;
        for (let j = 0; j < f; j++) sums[at + j]! += row[j]! / norm;
      }
    }
  } finally {
    judge.dispose();
  }
  const old = params.get("identity.weight");
  if (!old) throw new Error('imprinting: the params have no "identity.weight"');
  const weight = Float32Array.from(old.data); // identities without an image keep their row
  for (let id = 0; id < config.identities; id++) {
    let norm = 0;
    for (let j = 0; j < f; j++) norm += sums[id * f + j]! ** 2;
    if (norm === 0) continue;
    for (let j = 0; j < f; j++) weight[id * f + j] = sums[id * f + j]! / Math.sqrt(norm);
  }
  const out: Params = new Map(params);
  out.set("identity.weight", new HostTensor(weight, [config.identities, f]));
  return out;
}

export interface JudgeAccuracy {
  readonly n: number;
  /** Share of images whose identity is the judge's first choice / among its first five. */
  readonly identityTop1: number;
  readonly identityTop5: number;
  /** Share of images whose vendor the judge names. */
  readonly vendor: number;
}

/**
 * The judge's accuracy on a data set's images, each moved by a fresh random distortion drawn from
 * `seed` (a stream the training never used), or as they are without `distortion`.
 */
export async function judgeAccuracy(
  judge: EmojiJudge,
  data: EmojiDataset,
  opts: { distortion?: Distortion; seed?: number } = {},
): Promise<JudgeAccuracy> {
  const s = data.height;
  let images: HostTensor<"float32"> = new HostTensor(data.images, [data.count, 3, s, data.width]);
  if (opts.distortion)
    images = randomDistort(images, opts.distortion, new Rng(opts.seed ?? 12345).fold("eval"), 1);
  const r = await judge.classify(images);
  let top1 = 0;
  let top5 = 0;
  let vendor = 0;
  const v = judge.config.vendors;
  for (let i = 0; i < data.count; i++) {
    const want = data.identities[i]!;
    const ranked = r.identityTop.subarray(i * TOP_K, (i + 1) * TOP_K);
    if (ranked[0] === want) top1++;
    if (ranked.includes(want)) top5++;
    const probs = r.vendorProbs.subarray(i * v, (i + 1) * v);
    if (probs[data.vendors[i]!] === Math.max(...probs)) vendor++;
  }
  const n = data.count;
  return { n, identityTop1: top1 / n, identityTop5: top5 / n, vendor: vendor / n };
}
