/**
 * What the judges (the MNIST classifier, the emoji judge) need of the images they score: values
 * checked and mapped to [0, 1], and evenly spread subsets of reference sets.
 */
import { HostTensor } from "../tensor/host.ts";

/** The range image values are in: [0, 1] (saved images) or [−1, 1] (model space). */
export type ImageRange = "0,1" | "-1,1";

/** Checks image values and maps them to [0, 1]; slight overshoot is clipped, NaN is an error. */
export function toUnitRange(images: HostTensor, range: ImageRange = "0,1"): HostTensor<"float32"> {
  if (images.dtype !== "float32") throw new Error(`images must be float32, got ${images.dtype}`);
  const src = images.data as Float32Array;
  const [a, b] = range === "0,1" ? [0, 1] : [-1, 1];
  let lo = Number.POSITIVE_INFINITY;
  let hi = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < src.length; i++) {
    const v = src[i]!;
    if (Number.isNaN(v)) throw new Error(`images hold NaN (at flat index ${i})`);
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  const slack = (b - a) / 2;
  if (lo < a - slack || hi > b + slack) {
    throw new Error(
      `image values span [${lo.toFixed(3)}, ${hi.toFixed(3)}], far outside the range [${a}, ${b}] they were said to have; ` +
        (range === "0,1"
          ? 'the judge expects [0, 1]: map [−1, 1] images with (x + 1) / 2, or pass range "-1,1"'
          : 'pass range "0,1" for images in [0, 1]'),
    );
  }
  if (a === 0 && lo >= 0 && hi <= 1) return images as HostTensor<"float32">;
  return new HostTensor(
    src.map((v) => Math.min(1, Math.max(0, (v - a) / (b - a)))),
    images.shape,
  );
}

/** m indices spread evenly over 0..len−1 (all of them when m = len). */
export function spread(len: number, m: number): number[] {
  return Array.from({ length: m }, (_, j) => Math.floor((j * len) / m));
}
