/**
 * Judging generated MNIST digits with the bundled classifier (see classifier.ts):
 *
 * - conditional accuracy: the share of samples the classifier puts in the class they were asked
 *   for (per class too), and mean confidence: the mean probability it gives the requested class;
 * - a Fréchet distance in the classifier's feature space between the samples and held-out real
 *   digits, printed next to the same distance between two sets of real digits.
 *
 * The reference digits are the 1,000 held-out test digits (never seen in training), split per
 * class into two disjoint halves of 500 (50 per class): A (even positions) and B (odd). The
 * Fréchet estimate is biased upwards by an amount that shrinks with the sample size, so both
 * figures use the same size m = min(N, 500) against all of A:
 *
 *   frechet           = FD(m samples, A)      averaged over k = ⌊N/m⌋ disjoint sets of samples
 *   frechetRealVsReal = FD(m digits of B, A)  (m spread evenly over B, so classes stay balanced)
 *
 * Samples are dealt into the k sets class by class (by requested label, or by the predicted one
 * when there are no labels), so each set keeps the class mix of the whole. Their ratio is the
 * headline figure: 1 means "as close to real digits as other real digits are".
 */
import { loadMnist } from "../data/mnist.ts";
import { HostTensor } from "../tensor/host.ts";
import { type Classified, DigitClassifier } from "./classify.ts";
import { frechetDistance, type GaussianStats, gaussianStats, sqrtPsd } from "./frechet.ts";
import { spread, toUnitRange } from "./images.ts";

/** Size of each reference half of the test split. */
export const REFERENCE_HALF = 500;

export interface MnistEvalResult {
  /** Number of samples. */
  readonly n: number;
  /** Share of samples classified as their requested label (null without labels). */
  readonly accuracy: number | null;
  /** Mean probability of the requested label (of the predicted one without labels). */
  readonly meanConfidence: number;
  /** Accuracy per requested class 0..9 (null for a class with no samples, or without labels). */
  readonly perClassAccuracy: readonly (number | null)[] | null;
  /** How many samples the classifier put in each class 0..9 (a collapse shows here). */
  readonly predictedCounts: readonly number[];
  /** FD(samples, test half A), averaged over `frechetSets` sets of `frechetSize` samples. */
  readonly frechet: number;
  /** FD(test half B, test half A) with the same number of digits. */
  readonly frechetRealVsReal: number;
  /** frechet / frechetRealVsReal. */
  readonly frechetRatio: number;
  readonly frechetSize: number;
  readonly frechetSets: number;
  /** The classifier on the same m real digits of B: accuracy and mean confidence, for scale. */
  readonly real: { readonly n: number; readonly accuracy: number; readonly meanConfidence: number };
}

export interface MnistEvalOptions {
  /** A loaded classifier to use (default: the bundled one, loaded and disposed here). */
  readonly classifier?: DigitClassifier;
}

/** Checks labels and converts them to class indices. */
function labelsOf(labels: ArrayLike<number | bigint>, n: number, classes: number): Int32Array {
  if (labels.length !== n)
    throw new Error(`got ${labels.length} labels for ${n} images; pass one label per image`);
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const v = Number(labels[i]!);
    if (!Number.isInteger(v) || v < 0 || v >= classes) {
      throw new Error(`label ${i} is ${labels[i]}; MNIST labels must be integers from 0 to ${classes - 1}`);
    }
    out[i] = v;
  }
  return out;
}

/** Rows `idx` of a row-major [*, d] array. */
function rows(data: Float32Array, idx: readonly number[], d: number): Float32Array {
  const out = new Float32Array(idx.length * d);
  idx.forEach((r, i) => {
    out.set(data.subarray(r * d, (r + 1) * d), i * d);
  });
  return out;
}

interface Reference {
  /** The Gaussian fitted to the features of test half A, and its covariance's square root. */
  readonly a: GaussianStats;
  readonly sqrtCovA: Float64Array;
  /** Test half B, classified, and its labels. */
  readonly b: Classified;
  readonly bLabels: Int32Array;
}

const references = new WeakMap<DigitClassifier, Promise<Reference>>();

/** The classifier's view of the two held-out halves (computed once per classifier). */
function reference(judge: DigitClassifier): Promise<Reference> {
  let r = references.get(judge);
  if (!r) {
    r = (async () => {
      const test = loadMnist({ split: "test", size: 32 });
      const all = await judge.classify(new HostTensor(test.images, [test.count, 1, 32, 32]));
      // the test split is ordered by class, 100 each: even positions → A, odd → B
      const idxA = Array.from({ length: test.count / 2 }, (_, i) => 2 * i);
      const idxB = idxA.map((i) => i + 1);
      const f = judge.config.features;
      const k = judge.config.classes;
      const a = gaussianStats(rows(all.features, idxA, f), idxA.length, f);
      return {
        a,
        sqrtCovA: sqrtPsd(a.cov, f),
        b: {
          n: idxB.length,
          probs: rows(all.probs, idxB, k),
          features: rows(all.features, idxB, f),
          predictions: Int32Array.from(idxB, (i) => all.predictions[i]!),
        },
        bLabels: Int32Array.from(idxB, (i) => test.labels![i]!),
      };
    })();
    references.set(judge, r);
  }
  return r;
}

/** Accuracy and mean confidence of classified images against labels. */
function agreement(c: Classified, labels: Int32Array, idx: readonly number[], k: number) {
  let right = 0;
  let conf = 0;
  for (const i of idx) {
    if (c.predictions[i] === labels[i]) right++;
    conf += c.probs[i * k + labels[i]!]!;
  }
  return { accuracy: right / idx.length, meanConfidence: conf / idx.length };
}

/**
 * Scores digits [N, 1, 32, 32] (or 28×28) with values in [0, 1] against their requested labels
 * (null for unconditional samples). See the file comment for what each figure means.
 */
export async function evaluateMnist(
  images: HostTensor,
  labels: ArrayLike<number | bigint> | null,
  opts: MnistEvalOptions = {},
): Promise<MnistEvalResult> {
  const n = images.shape[0] ?? 0;
  if (images.shape.length !== 4 || n < 2) {
    throw new Error(`evaluateMnist needs images [N, 1, 32, 32] with N ≥ 2, got [${images.shape}]`);
  }
  const judge = opts.classifier ?? (await DigitClassifier.load());
  try {
    const k = judge.config.classes;
    const f = judge.config.features;
    const wanted = labels === null ? null : labelsOf(labels, n, k);
    const c = await judge.classify(toUnitRange(images));
    const ref = await reference(judge);

    const all = Array.from({ length: n }, (_, i) => i);
    const byClass = wanted ?? c.predictions;
    const predictedCounts = new Array<number>(k).fill(0);
    for (const p of c.predictions) predictedCounts[p]!++;
    let accuracy: number | null = null;
    let perClassAccuracy: (number | null)[] | null = null;
    let meanConfidence: number;
    if (wanted) {
      ({ accuracy, meanConfidence } = agreement(c, wanted, all, k));
      perClassAccuracy = Array.from({ length: k }, (_, cls) => {
        const idx = all.filter((i) => wanted[i] === cls);
        return idx.length === 0 ? null : agreement(c, wanted, idx, k).accuracy;
      });
    } else {
      meanConfidence = agreement(c, c.predictions, all, k).meanConfidence;
    }

    // k sets of m samples each, dealt class by class, each compared with half A
    const m = Math.min(n, REFERENCE_HALF);
    const sets = Math.floor(n / m);
    const order = [...all].sort((i, j) => byClass[i]! - byClass[j]! || i - j);
    let frechet = 0;
    for (let s = 0; s < sets; s++) {
      const dealt = order.filter((_, pos) => pos % sets === s);
      const pick = spread(dealt.length, m).map((p) => dealt[p]!);
      frechet += frechetDistance(ref.a, gaussianStats(rows(c.features, pick, f), m, f), ref.sqrtCovA) / sets;
    }
    const pickB = spread(REFERENCE_HALF, m);
    const realB = gaussianStats(rows(ref.b.features, pickB, f), m, f);
    const frechetRealVsReal = frechetDistance(ref.a, realB, ref.sqrtCovA);
    return {
      n,
      accuracy,
      meanConfidence,
      perClassAccuracy,
      predictedCounts,
      frechet,
      frechetRealVsReal,
      frechetRatio: frechet / frechetRealVsReal,
      frechetSize: m,
      frechetSets: sets,
      real: { n: m, ...agreement(ref.b, ref.bLabels, pickB, k) },
    };
  } finally {
    if (!opts.classifier) judge.dispose();
  }
}
