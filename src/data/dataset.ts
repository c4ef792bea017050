/**
 * In-memory image datasets: every image decoded, resized and stored once as float32 NCHW in
 * [0, 1]. The datasets diffuse trains on (MNIST, folders of small images) fit in memory easily, and
 * a batch is then just a copy (see loader.ts).
 */

import { formatShape } from "../tensor/host.ts";

export interface ImageDataset {
  /** Number of images N. */
  readonly count: number;
  readonly channels: number;
  readonly height: number;
  readonly width: number;
  /** [N, C, H, W], row-major, values in [0, 1]. */
  readonly images: Float32Array;
  /** Class index of each image, or null for an unlabelled dataset. */
  readonly labels: Int32Array | null;
  /** Name of each class index (labels are indices into it), or null. */
  readonly classNames: readonly string[] | null;
  /** The file each image was read from, where it was read from files. */
  readonly files?: readonly string[];
}

/** Checks that a dataset's arrays agree with its sizes. */
export function checkDataset(d: ImageDataset, what = "dataset"): void {
  const per = d.channels * d.height * d.width;
  if (d.images.length !== d.count * per) {
    throw new Error(
      `${what}: images hold ${d.images.length} values, but ${d.count} × ${formatShape([d.channels, d.height, d.width])} needs ${d.count * per}`,
    );
  }
  if (d.labels !== null && d.labels.length !== d.count) {
    throw new Error(`${what}: ${d.labels.length} labels for ${d.count} images`);
  }
}
