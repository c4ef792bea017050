// Training the judge: the augmentation and schedule helpers, crossEntropy against a float64
// reference, and a CI-sized run (150 steps of a narrow network) that ends far above chance.
import assert from "node:assert/strict";
import { test } from "node:test";
import { defaultDistortion, randomDistort } from "../../src/eval/augment.ts";
import { DigitClassifier } from "../../src/eval/classify.ts";
import { cosineLr, dropoutMask, testAccuracy, trainClassifier } from "../../src/eval/train-classifier.ts";
import { crossEntropy } from "../../src/nn/index.ts";
import { evaluate } from "../../src/runtime/compile.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import { Rng } from "../../src/tensor/rng.ts";

test("crossEntropy matches a float64 log-softmax reference (large logits included)", async () => {
  const z = [2, -1, 0.5, 100, 99, 101, -3, -3, -3];
  const y = [0, 2, 1];
  const out = await evaluate(
    { z: new HostTensor(Float32Array.from(z), [3, 3]), y: HostTensor.int64(y) },
    (i) => ({ loss: crossEntropy(i["z"]!, i["y"]!) }),
  );
  let want = 0;
  for (let r = 0; r < 3; r++) {
    const row = z.slice(3 * r, 3 * r + 3);
    const m = Math.max(...row);
    const lse = m + Math.log(row.reduce((s, v) => s + Math.exp(v - m), 0));
    want += (lse - row[y[r]!]!) / 3;
  }
  assert.ok(Math.abs(out["loss"]!.toArray()[0]! - want) < 1e-5, `${out["loss"]!.toArray()[0]} vs ${want}`);
});

test("cosineLr warms up linearly and decays to zero; dropoutMask keeps the mean", () => {
  assert.equal(cosineLr(5, 100, 1, 10), 0.5);
  assert.equal(cosineLr(10, 100, 1, 10), 1);
  assert.ok(Math.abs(cosineLr(55, 100, 1, 10) - 0.5) < 1e-12);
  assert.equal(cosineLr(100, 100, 1, 10), 0);
  const mask = dropoutMask(100, 100, 0.3, new Rng(0)).data;
  const zeros = mask.filter((v) => v === 0).length;
  assert.ok(zeros > 2600 && zeros < 3400, `${zeros} of 10000 dropped`);
  assert.ok(mask.every((v) => v === 0 || Math.abs(v - 1 / 0.7) < 1e-6));
});

test("randomDistort: the identity without distortion; bounded moves of a blob otherwise", () => {
  // a 2×2 blob in the middle of 12×12 images: kept exactly by no distortion; moved but kept (as
  // mass, about scale² and inside the image) by shifts, rotations, scalings and elastic warps
  const img = new Float32Array(4 * 144);
  for (let i = 0; i < 4; i++) for (const p of [65, 66, 77, 78]) img[i * 144 + p] = 1;
  const x = new HostTensor<"float32">(img, [4, 1, 12, 12]);
  const none = { degrees: 0, scale: 0, shift: 0, elasticAlpha: 0, elasticSigma: 1 };
  assert.deepEqual([...randomDistort(x, none, new Rng(0)).data], [...img]);
  const some = { degrees: 15, scale: 0.1, shift: 1.5, elasticAlpha: 4, elasticSigma: 2 };
  const moved = randomDistort(x, some, new Rng(0));
  for (let i = 0; i < 4; i++) {
    let mass = 0;
    for (let k = 0; k < 144; k++) mass += moved.data[i * 144 + k]!;
    assert.ok(mass > 2 && mass < 6.5, `mass ${mass}`);
  }
  assert.notDeepEqual([...moved.data], [...img]);
});

test("150 training steps of a narrow judge reach well above chance on the test split", async () => {
  const trained = await trainClassifier({
    steps: 150,
    batchSize: 64,
    lr: 3e-3,
    seed: 1,
    config: { channels: [8, 16, 32], features: 64, classes: 10, imageSize: 32 },
    distortion: { ...defaultDistortion, elasticAlpha: 0 }, // the elastic field costs more than this net's step
  });
  const judge = await DigitClassifier.create(trained.config, trained.params);
  try {
    const acc = await testAccuracy(judge);
    assert.ok(acc > 0.8, `accuracy after 150 steps: ${acc}`);
  } finally {
    judge.dispose();
  }
});
