import assert from "node:assert/strict";
import { test } from "node:test";
import { loadMnist } from "../../src/data/mnist.ts";

function counts(labels: Int32Array): number[] {
  const c = new Array<number>(10).fill(0);
  for (const l of labels) c[l]!++;
  return c;
}

test("MNIST: fixed split sizes, 100 test images per class, values in [0, 1]", () => {
  const train = loadMnist();
  const test_ = loadMnist({ split: "test" });
  const all = loadMnist({ split: "all" });
  assert.equal(train.count, 9000);
  assert.equal(test_.count, 1000);
  assert.equal(all.count, 10000);
  assert.deepEqual([train.channels, train.height, train.width], [1, 28, 28]);
  assert.equal(train.images.length, 9000 * 784);
  assert.deepEqual(counts(test_.labels!), new Array(10).fill(100));
  const trainCounts = counts(train.labels!);
  const allCounts = counts(all.labels!);
  assert.deepEqual(
    trainCounts,
    allCounts.map((c) => c - 100),
  );
  assert.ok(
    allCounts.every((c) => c > 800 && c < 1200),
    `class sizes ${allCounts}`,
  );
  let lo = 1;
  let hi = 0;
  for (const v of train.images) {
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  assert.equal(lo, 0);
  assert.ok(hi > 0.99 && hi <= 1);
  // The test images are exactly the first 100 of each class in "all" (disjoint from train).
  const per = 784;
  assert.deepEqual(test_.images.subarray(0, per), all.images.subarray(0, per));
  assert.deepEqual(train.images.subarray(0, per), all.images.subarray(100 * per, 101 * per));
});

test("MNIST is deterministic, and size 32 pads with zeros, centred", () => {
  const a = loadMnist({ split: "test" });
  const b = loadMnist({ split: "test" });
  assert.deepEqual(a.images, b.images);
  assert.deepEqual(a.labels, b.labels);
  const p = loadMnist({ split: "test", size: 32 });
  assert.deepEqual([p.height, p.width], [32, 32]);
  for (const k of [0, 517, 999]) {
    let sum = 0;
    for (let y = 0; y < 32; y++) {
      for (let x = 0; x < 32; x++) {
        const v = p.images[k * 1024 + y * 32 + x]!;
        if (y < 2 || y >= 30 || x < 2 || x >= 30) assert.equal(v, 0);
        else assert.equal(v, a.images[k * 784 + (y - 2) * 28 + (x - 2)]);
        sum += v;
      }
    }
    assert.ok(sum > 10, "a digit has ink");
  }
  assert.throws(() => loadMnist({ size: 30 as 28 }), /28 or 32/);
});
