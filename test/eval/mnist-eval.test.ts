// The bundled MNIST judge on real digits: ≥ 99% on the held-out test split, real-vs-real Fréchet
// distance as defined in mnist-eval.ts, and figures that move the right way for bad samples.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { loadMnist } from "../../src/data/mnist.ts";
import { BUNDLED_CLASSIFIER_DIR, DigitClassifier } from "../../src/eval/classify.ts";
import { evaluateMnist } from "../../src/eval/mnist-eval.ts";
import { testAccuracy } from "../../src/eval/train-classifier.ts";
import { HostTensor } from "../../src/tensor/host.ts";

let judge: DigitClassifier;
before(async () => {
  judge = await DigitClassifier.load();
});
after(() => judge.dispose());

/** Digits `idx` of a split as [n, 1, size, size] images and their labels. */
function pick(split: "train" | "test", idx: readonly number[], size: 28 | 32 = 32) {
  const d = loadMnist({ split, size });
  const per = size * size;
  const images = new Float32Array(idx.length * per);
  idx.forEach((k, i) => {
    images.set(d.images.subarray(k * per, (k + 1) * per), i * per);
  });
  return {
    images: new HostTensor<"float32">(images, [idx.length, 1, size, size]),
    labels: idx.map((k) => d.labels![k]!),
  };
}

/** Half B of the test split (odd positions: 50 per class). */
const halfB = Array.from({ length: 500 }, (_, i) => 2 * i + 1);

test("the bundled classifier reaches ≥ 99% on the held-out test split, as its config.json records", async () => {
  const acc = await testAccuracy(judge);
  const recorded = JSON.parse(readFileSync(join(BUNDLED_CLASSIFIER_DIR, "config.json"), "utf8")) as {
    test_accuracy: number;
  };
  assert.ok(acc >= 0.99, `test accuracy ${acc}`);
  assert.equal(acc, recorded.test_accuracy);
});

test("evaluateMnist on the whole held-out split: ≥ 99% accuracy; halves A and B as the two FD sets", async () => {
  const { images, labels } = pick(
    "test",
    Array.from({ length: 1000 }, (_, i) => i),
  );
  const r = await evaluateMnist(images, labels, { classifier: judge });
  assert.equal(r.n, 1000);
  assert.ok(r.accuracy !== null && r.accuracy >= 0.99, `accuracy ${r.accuracy}`);
  assert.ok(r.meanConfidence > 0.95, `confidence ${r.meanConfidence}`);
  assert.ok(
    r.perClassAccuracy!.every((a) => a !== null && a >= 0.95),
    `${r.perClassAccuracy}`,
  );
  assert.deepEqual(r.predictedCounts.length, 10);
  // dealt class by class into 2 sets of 500: exactly half A (FD 0) and half B (the real-vs-real FD)
  assert.equal(r.frechetSize, 500);
  assert.equal(r.frechetSets, 2);
  assert.ok(r.frechetRealVsReal > 0 && Number.isFinite(r.frechetRealVsReal));
  assert.ok(Math.abs(r.frechet - r.frechetRealVsReal / 2) < 1e-6 * r.frechetRealVsReal, `${r.frechet}`);
});

test("half B of the held-out split is exactly the real-vs-real distance (ratio 1)", async () => {
  const { images, labels } = pick("test", halfB);
  const r = await evaluateMnist(images, labels, { classifier: judge });
  assert.equal(r.frechetSets, 1);
  assert.ok(Math.abs(r.frechetRatio - 1) < 1e-9, `ratio ${r.frechetRatio}`);
  assert.ok(r.accuracy! >= 0.98, `accuracy ${r.accuracy}`);
  assert.equal(r.real.accuracy, r.accuracy);
  assert.equal(r.real.n, 500);
});

test("training digits score like real digits; one repeated class and noise do not", async () => {
  const idx = Array.from({ length: 200 }, (_, i) => i * 45); // spread over all classes
  const real = pick("train", idx);
  const good = await evaluateMnist(real.images, real.labels, { classifier: judge });
  assert.equal(good.frechetSize, 200);
  assert.ok(good.frechetRatio < 1.5, `train digits vs held-out: ratio ${good.frechetRatio}`);

  // mode collapse: 200 copies of twenty "3"s
  const first3 = loadMnist({ split: "train" }).labels!.indexOf(3);
  const threes = pick(
    "train",
    Array.from({ length: 200 }, (_, i) => first3 + (i % 20)),
  );
  const collapsed = await evaluateMnist(threes.images, threes.labels, { classifier: judge });
  assert.ok(collapsed.frechetRatio > 3, `collapsed ratio ${collapsed.frechetRatio}`);
  assert.ok(collapsed.predictedCounts[3]! > 190);

  // noisy digits, and the requested labels off by one
  const noisy = real.images.data.map((v, i) =>
    Math.min(1, Math.max(0, v + 0.5 * Math.sin(i * 12.9898) ** 2)),
  );
  const r = await evaluateMnist(
    new HostTensor(noisy, real.images.shape),
    real.labels.map((l) => (l + 1) % 10),
    { classifier: judge },
  );
  assert.ok(r.frechetRatio > 3, `noisy ratio ${r.frechetRatio}`);
  assert.ok(r.accuracy! < 0.2, `accuracy against wrong labels ${r.accuracy}`);
});

test("28×28 digits are padded, unconditional samples have no accuracy, bad input is refused", async () => {
  const idx = halfB.slice(0, 100);
  const r32 = await evaluateMnist(pick("test", idx).images, null, { classifier: judge });
  const r28 = await evaluateMnist(pick("test", idx, 28).images, null, { classifier: judge });
  assert.equal(r32.accuracy, null);
  assert.equal(r32.perClassAccuracy, null);
  assert.ok(Math.abs(r28.frechet - r32.frechet) < 1e-9 * r32.frechet);
  const { images, labels } = pick("test", idx);
  const signed = new HostTensor(
    images.data.map((v) => 2 * v - 1),
    images.shape,
  );
  await assert.rejects(
    evaluateMnist(signed, labels, { classifier: judge }),
    /expects \[0, 1\].*\(x \+ 1\) \/ 2/,
  );
  await assert.rejects(
    evaluateMnist(images, labels.slice(1), { classifier: judge }),
    /99 labels for 100 images/,
  );
  await assert.rejects(
    evaluateMnist(images, [...labels.slice(1), 10], { classifier: judge }),
    /label 99 is 10; MNIST labels must be integers from 0 to 9/,
  );
  await assert.rejects(
    evaluateMnist(new HostTensor(new Float32Array(2 * 3 * 32 * 32), [2, 3, 32, 32]), null, {
      classifier: judge,
    }),
    /\[N, 1, 32, 32\] or \[N, 1, 28, 28\]/,
  );
});
