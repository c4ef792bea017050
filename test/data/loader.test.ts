import assert from "node:assert/strict";
import { test } from "node:test";
import type { ImageDataset } from "../../src/data/dataset.ts";
import { DataLoader } from "../../src/data/loader.ts";
import { Rng } from "../../src/tensor/rng.ts";

/** N images of 1×2×2 whose pixels all equal the image index; label = index % 3. */
function toy(n: number, labelled = true): ImageDataset {
  const images = new Float32Array(n * 4);
  for (let i = 0; i < n; i++) images.fill(i, i * 4, i * 4 + 4);
  return {
    count: n,
    channels: 1,
    height: 2,
    width: 2,
    images,
    labels: labelled ? Int32Array.from({ length: n }, (_, i) => i % 3) : null,
    classNames: labelled ? ["a", "b", "c"] : null,
  };
}

test("batches are contiguous copies with matching labels", () => {
  const loader = new DataLoader(toy(10), { batchSize: 4, rng: 1 });
  const b = loader.next();
  assert.deepEqual(b.images.shape, [4, 1, 2, 2]);
  assert.deepEqual(b.labels!.shape, [4]);
  for (let i = 0; i < 4; i++) {
    const k = b.indices[i]!;
    assert.deepEqual(Array.from(b.images.data.subarray(i * 4, i * 4 + 4)), [k, k, k, k]);
    assert.equal(b.labels!.data[i], BigInt(k % 3));
  }
  assert.equal(new DataLoader(toy(5, false), { batchSize: 2, rng: 0 }).next().labels, null);
});

test("same seed, same batches; different seeds or epochs, different orders", () => {
  const take = (seed: number) => {
    const l = new DataLoader(toy(50), { batchSize: 8, rng: new Rng(seed) });
    return Array.from({ length: 12 }, () => Array.from(l.next().indices));
  };
  assert.deepEqual(take(7), take(7));
  assert.notDeepEqual(take(7), take(8));
  const l = new DataLoader(toy(50), { batchSize: 8, rng: 7 });
  assert.notDeepEqual(Array.from(l.order(0)), Array.from(l.order(1)));
  const plain = new DataLoader(toy(5), { batchSize: 2, rng: 7, shuffle: false, dropLast: false });
  assert.deepEqual(
    [...plain.epochBatches(0)].map((b) => Array.from(b.indices)),
    [[0, 1], [2, 3], [4]],
  );
});

test("every sample exactly once per epoch; dropLast drops only the remainder", () => {
  const n = 23;
  for (const dropLast of [true, false]) {
    const l = new DataLoader(toy(n), { batchSize: 5, rng: 3, dropLast });
    assert.equal(l.batchesPerEpoch, dropLast ? 4 : 5);
    for (let epoch = 0; epoch < 3; epoch++) {
      const seen: number[] = [];
      for (let b = 0; b < l.batchesPerEpoch; b++) {
        const batch = l.next();
        assert.equal(batch.epoch, epoch);
        assert.equal(batch.batch, b);
        seen.push(...batch.indices);
      }
      assert.equal(seen.length, dropLast ? 20 : 23);
      assert.equal(new Set(seen).size, seen.length, "no repeats");
      if (!dropLast)
        assert.deepEqual(
          seen.sort((x, y) => x - y),
          Array.from({ length: n }, (_, i) => i),
        );
    }
  }
  assert.throws(() => new DataLoader(toy(3), { batchSize: 4, rng: 0 }), /fewer than one batch/);
});

test("resuming from a saved position gives the same batches", () => {
  const full = new DataLoader(toy(37), { batchSize: 6, rng: 11 });
  const expected = Array.from({ length: 20 }, () => full.next());
  const first = new DataLoader(toy(37), { batchSize: 6, rng: 11 });
  for (let i = 0; i < 9; i++) first.next();
  const saved = JSON.parse(JSON.stringify(first.position));
  assert.deepEqual(saved, { epoch: 1, batch: 3 });
  const resumed = new DataLoader(toy(37), { batchSize: 6, rng: 11, start: saved });
  for (let i = 9; i < 20; i++) {
    const b = resumed.next();
    assert.deepEqual(b.indices, expected[i]!.indices);
    assert.deepEqual(b.images.data, expected[i]!.images.data);
    assert.equal(b.epoch, expected[i]!.epoch);
  }
  // A position at the end of an epoch rolls over to the next.
  const end = new DataLoader(toy(37), { batchSize: 6, rng: 11, start: { epoch: 0, batch: 6 } });
  assert.deepEqual(end.position, { epoch: 1, batch: 0 });
  assert.throws(
    () => new DataLoader(toy(37), { batchSize: 6, rng: 11, start: { epoch: 0, batch: 7 } }),
    /start\.batch/,
  );
});
