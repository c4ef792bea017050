/**
 * The images of an autoencoder run: a training set and a held-out set for the reconstruction PSNR,
 * from the run config's `data` section — emoji (its train and holdout splits), MNIST (train and test
 * splits) or a folder (its last `holdout` images held out). Pixels stay in [0, 1] as every
 * ImageDataset; the trainer maps them to [−1, 1].
 */
import type { ImageDataset } from "../data/dataset.ts";
import { loadEmoji } from "../data/emoji.ts";
import { loadImageFolder } from "../data/image-folder.ts";
import { loadMnist } from "../data/mnist.ts";
import type { VaeDataConfig } from "./vae-config.ts";

export interface VaeData {
  readonly train: ImageDataset;
  readonly holdout: ImageDataset;
}

/** The images at `indices` as a dataset of their own (pixels copied; no labels). */
export function pickImages(d: ImageDataset, indices: readonly number[]): ImageDataset {
  const per = d.channels * d.height * d.width;
  const images = new Float32Array(indices.length * per);
  indices.forEach((src, i) => {
    images.set(d.images.subarray(src * per, (src + 1) * per), i * per);
  });
  return {
    count: indices.length,
    channels: d.channels,
    height: d.height,
    width: d.width,
    images,
    labels: null,
    classNames: null,
  };
}

/** `n` images spread evenly over the dataset (every class or style, not the first few). */
export function spreadImages(d: ImageDataset, n: number): ImageDataset {
  const k = Math.min(n, d.count);
  return pickImages(
    d,
    Array.from({ length: k }, (_, i) => Math.floor((i * d.count) / k)),
  );
}

/** Splits off the last `n` images as the held-out set. */
export function splitHoldout(d: ImageDataset, n: number): VaeData {
  if (d.count <= n) {
    throw new Error(
      `the data has ${d.count} images, not more than the ${n} to hold out; lower data.holdout or add images`,
    );
  }
  const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);
  return { train: pickImages(d, range(0, d.count - n)), holdout: pickImages(d, range(d.count - n, d.count)) };
}

/** Loads the run's training and held-out images. */
export function loadVaeData(d: VaeDataConfig): VaeData {
  switch (d.dataset) {
    case "emoji":
      return {
        train: loadEmoji({ split: "train", size: d.size }),
        holdout: spreadImages(loadEmoji({ split: "holdout", size: d.size }), d.holdout),
      };
    case "mnist": {
      if (d.size !== 28 && d.size !== 32) {
        throw new Error(`data.size for mnist must be 28 or 32, got ${d.size}`);
      }
      return {
        train: loadMnist({ split: "train", size: d.size }),
        holdout: spreadImages(loadMnist({ split: "test", size: d.size }), d.holdout),
      };
    }
    case "folder":
      return splitHoldout(
        loadImageFolder(d.path!, { size: d.size, channels: d.channels, classes: false }),
        d.holdout,
      );
  }
}
