/**
 * Training the MNIST judge with the engine: cross-entropy on the TRAIN split only (the test split
 * stays held out for the accuracy figure and the Fréchet reference), AdamW, a linear warm-up then
 * cosine decay to zero, dropout on the features, and random distortions of the digits (augment.ts)
 * — so that the judge does not depend on digits being drawn and centred exactly the way MNIST's
 * are, which generated digits need not be.
 */
import { DataLoader } from "../data/loader.ts";
import { loadMnist } from "../data/mnist.ts";
import { crossEntropy } from "../nn/index.ts";
import { HostTensor } from "../tensor/host.ts";
import { initParams, type Params } from "../tensor/params.ts";
import { Rng } from "../tensor/rng.ts";
import { compileTrainStep, paramSpecsOf } from "../train/train-step.ts";
import { type Distortion, defaultDistortion, randomDistort } from "./augment.ts";
import { type ClassifierConfig, classifier, defaultClassifierConfig } from "./classifier.ts";
import type { DigitClassifier } from "./classify.ts";

export interface TrainClassifierOptions {
  readonly steps: number;
  readonly batchSize?: number;
  readonly seed?: number;
  /** Peak learning rate (default 2e-3). */
  readonly lr?: number;
  readonly warmupSteps?: number;
  readonly weightDecay?: number;
  /** Random distortions of the training digits (default `defaultDistortion`). */
  readonly distortion?: Distortion;
  /** Dropout rate on the features before the head (default 0.3; Srivastava et al. 2014). */
  readonly dropout?: number;
  readonly config?: ClassifierConfig;
  /** Intra-op threads for the sessions (default: all cores). */
  readonly threads?: number;
  /** Called every `logEvery` steps and at the last one. */
  readonly onLog?: (info: { step: number; loss: number; lr: number; seconds: number }) => void;
  readonly logEvery?: number;
}

export interface TrainedClassifier {
  readonly config: ClassifierConfig;
  readonly params: Params;
  readonly steps: number;
  readonly seconds: number;
  /** Mean training loss over the last 10% of steps. */
  readonly finalLoss: number;
}

/** Learning rate at step t (1-based): linear warm-up to `peak`, then cosine to 0 at `total`. */
export function cosineLr(t: number, total: number, peak: number, warmup: number): number {
  if (t <= warmup) return (peak * t) / Math.max(warmup, 1);
  const p = (t - warmup) / Math.max(total - warmup, 1);
  return 0.5 * peak * (1 + Math.cos(Math.PI * Math.min(p, 1)));
}

/** A dropout mask [B, F]: each entry 0 with probability p, else 1/(1 − p) (inverted dropout). */
export function dropoutMask(b: number, f: number, p: number, rng: Rng): HostTensor<"float32"> {
  const keep = new Float32Array(b * f);
  for (let i = 0; i < keep.length; i++) keep[i] = rng.nextUniform() < p ? 0 : 1 / (1 - p);
  return new HostTensor(keep, [b, f]);
}

/** Trains the classifier from a seeded initialization; deterministic for a given seed and thread count. */
export async function trainClassifier(opts: TrainClassifierOptions): Promise<TrainedClassifier> {
  const config = opts.config ?? defaultClassifierConfig;
  const batchSize = opts.batchSize ?? 128;
  const seed = opts.seed ?? 0;
  const peak = opts.lr ?? 2e-3;
  const warmup = opts.warmupSteps ?? Math.min(100, Math.floor(opts.steps / 10));
  const distortion = opts.distortion ?? defaultDistortion;
  const dropout = opts.dropout ?? 0.3;
  const s = config.imageSize;
  const rng = new Rng(seed);
  const session = opts.threads === undefined ? {} : { threads: opts.threads };

  const train = loadMnist({ split: "train", size: 32 });
  const loader = new DataLoader(train, { batchSize, rng: rng.fold("data") });
  const augment = rng.fold("augment");
  const step = await compileTrainStep(
    (scope, b) => crossEntropy(classifier(scope, b["images"]!, config, b["keep"]).logits, b["labels"]!),
    {
      images: { shape: [batchSize, 1, s, s] },
      labels: { shape: [batchSize], dtype: "int64" },
      keep: { shape: [batchSize, config.features] },
    },
    { ema: false, adamw: { weightDecay: opts.weightDecay ?? 0.01 }, session },
  );
  try {
    const specs = paramSpecsOf((scope, g) => classifier(scope, g.input("x", [1, 1, s, s]), config));
    const state = step.initState(initParams(specs, rng.fold("init")));
    const started = performance.now();
    const losses: number[] = [];
    for (let t = 1; t <= opts.steps; t++) {
      const batch = loader.next();
      const lr = cosineLr(t, opts.steps, peak, warmup);
      const r = await step.step(
        state,
        {
          images: randomDistort(batch.images, distortion, augment),
          labels: batch.labels!,
          keep: dropoutMask(batchSize, config.features, dropout, augment),
        },
        lr,
      );
      losses.push(r.loss);
      if (!Number.isFinite(r.loss))
        throw new Error(`classifier training diverged at step ${t} (loss ${r.loss})`);
      if (opts.onLog && (t % (opts.logEvery ?? 100) === 0 || t === opts.steps)) {
        opts.onLog({ step: t, loss: r.loss, lr, seconds: (performance.now() - started) / 1000 });
      }
    }
    await step.sync(state);
    const tail = losses.slice(-Math.max(1, Math.floor(losses.length / 10)));
    return {
      config,
      params: state.params,
      steps: opts.steps,
      seconds: (performance.now() - started) / 1000,
      finalLoss: tail.reduce((a, b) => a + b, 0) / tail.length,
    };
  } finally {
    step.dispose();
  }
}

/** Accuracy of a classifier on the held-out MNIST test split (1,000 digits, 100 per class). */
export async function testAccuracy(judge: DigitClassifier): Promise<number> {
  const test = loadMnist({ split: "test", size: 32 });
  const r = await judge.classify(new HostTensor(test.images, [test.count, 1, 32, 32]));
  let right = 0;
  for (let i = 0; i < test.count; i++) if (r.predictions[i] === test.labels![i]) right++;
  return right / test.count;
}
