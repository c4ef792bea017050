/**
 * Seeded shuffling and batching over an in-memory dataset.
 *
 * The order of epoch e is `rng.fold(e).permutation(N)`: a function of the generator's key and the
 * epoch alone, so the position { epoch, batch } of the next batch is the loader's whole state.
 * Saving it with a checkpoint and passing it back as `start` makes a resumed run see exactly the
 * batches the uninterrupted run would have. A batch is a contiguous copy [B, C, H, W] (plus int64
 * labels [B] when the dataset has them); the copy is synchronous and cheap next to a train step.
 */

import { HostTensor } from "../tensor/host.ts";
import { Rng } from "../tensor/rng.ts";
import { checkDataset, type ImageDataset } from "./dataset.ts";

/** Where a loader stands: the epoch and the index within it of the next batch. */
export interface LoaderPosition {
  readonly epoch: number;
  readonly batch: number;
}

export interface LoaderOptions {
  readonly batchSize: number;
  /** The shuffling stream (only its key is used; it is not advanced), or a seed. */
  readonly rng: Rng | number;
  /** Shuffle each epoch (default true); false keeps dataset order. */
  readonly shuffle?: boolean;
  /** Drop the last, smaller batch of an epoch (default true: every batch has batchSize images). */
  readonly dropLast?: boolean;
  /** Resume from this position (default { epoch: 0, batch: 0 }). */
  readonly start?: LoaderPosition;
}

export interface Batch {
  /** [B, C, H, W] float32 in [0, 1]. */
  readonly images: HostTensor<"float32">;
  /** [B] class indices, or null for an unlabelled dataset. */
  readonly labels: HostTensor<"int64"> | null;
  /** Dataset index of each image in the batch. */
  readonly indices: Int32Array;
  readonly epoch: number;
  /** Index of this batch within its epoch. */
  readonly batch: number;
}

export class DataLoader {
  readonly dataset: ImageDataset;
  readonly batchSize: number;
  readonly batchesPerEpoch: number;
  private readonly rng: Rng;
  private readonly shuffle: boolean;
  private readonly dropLast: boolean;
  private epoch: number;
  private batch: number;
  private cachedEpoch = -1;
  private cachedOrder: Int32Array = new Int32Array(0);

  constructor(dataset: ImageDataset, options: LoaderOptions) {
    checkDataset(dataset);
    const { batchSize } = options;
    if (!Number.isInteger(batchSize) || batchSize < 1) {
      throw new Error(`batchSize must be a positive integer, got ${batchSize}`);
    }
    this.dataset = dataset;
    this.batchSize = batchSize;
    this.rng = typeof options.rng === "number" ? new Rng(options.rng) : options.rng;
    this.shuffle = options.shuffle ?? true;
    this.dropLast = options.dropLast ?? true;
    const n = dataset.count;
    this.batchesPerEpoch = this.dropLast ? Math.floor(n / batchSize) : Math.ceil(n / batchSize);
    if (this.batchesPerEpoch === 0) {
      throw new Error(
        `the dataset has ${n} images, fewer than one batch of ${batchSize}; use a smaller batchSize or dropLast: false`,
      );
    }
    const start = options.start ?? { epoch: 0, batch: 0 };
    if (!Number.isInteger(start.epoch) || start.epoch < 0) {
      throw new Error(`start.epoch must be a non-negative integer, got ${start.epoch}`);
    }
    if (!Number.isInteger(start.batch) || start.batch < 0 || start.batch > this.batchesPerEpoch) {
      throw new Error(`start.batch must be an integer in 0..${this.batchesPerEpoch}, got ${start.batch}`);
    }
    this.epoch = start.epoch;
    this.batch = start.batch;
    if (this.batch === this.batchesPerEpoch) {
      this.epoch++;
      this.batch = 0;
    }
  }

  /** The position of the next batch (save it to resume). */
  get position(): LoaderPosition {
    return { epoch: this.epoch, batch: this.batch };
  }

  /** The order in which epoch `epoch` visits the dataset. */
  order(epoch: number): Int32Array {
    if (epoch !== this.cachedEpoch) {
      const n = this.dataset.count;
      this.cachedOrder = this.shuffle
        ? this.rng.fold(epoch).permutation(n)
        : Int32Array.from({ length: n }, (_, i) => i);
      this.cachedEpoch = epoch;
    }
    return this.cachedOrder;
  }

  /** Batch `batch` of epoch `epoch`, without moving the loader. */
  batchAt(epoch: number, batch: number): Batch {
    if (!Number.isInteger(batch) || batch < 0 || batch >= this.batchesPerEpoch) {
      throw new Error(`batch must be in 0..${this.batchesPerEpoch - 1}, got ${batch}`);
    }
    const d = this.dataset;
    const order = this.order(epoch);
    const from = batch * this.batchSize;
    const indices = order.slice(from, Math.min(from + this.batchSize, d.count));
    const b = indices.length;
    const per = d.channels * d.height * d.width;
    const images = new Float32Array(b * per);
    for (let i = 0; i < b; i++) {
      const k = indices[i]!;
      images.set(d.images.subarray(k * per, (k + 1) * per), i * per);
    }
    let labels: HostTensor<"int64"> | null = null;
    if (d.labels !== null) {
      const src = d.labels;
      labels = new HostTensor(
        BigInt64Array.from(indices, (k) => BigInt(src[k]!)),
        [b],
      );
    }
    return {
      images: new HostTensor(images, [b, d.channels, d.height, d.width]),
      labels,
      indices,
      epoch,
      batch,
    };
  }

  /** The next batch; epochs follow each other without end. */
  next(): Batch {
    const out = this.batchAt(this.epoch, this.batch);
    this.batch++;
    if (this.batch === this.batchesPerEpoch) {
      this.epoch++;
      this.batch = 0;
    }
    return out;
  }

  /** The batches of one epoch, in order (does not move the loader). */
  *epochBatches(epoch: number): Generator<Batch> {
    for (let b = 0; b < this.batchesPerEpoch; b++) yield this.batchAt(epoch, b);
  }
}
