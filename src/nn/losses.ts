/**
 * Losses: mean squared error, optionally weighted per sample (min-SNR and other weightings), and
 * the cross-entropy of a classifier's logits.
 */
import { HostTensor } from "../tensor/host.ts";
import * as o from "../tensor/ops.ts";
import type { Tensor } from "../tensor/symbolic.ts";

/** mean((a − b)²) over all elements. */
export const mse = (a: Tensor, b: Tensor): Tensor => o.mean(o.square(o.sub(a, b)));

/** Per-sample mean of (a − b)² over all axes but the first: [N, ...] → [N]. */
export function msePerSample(a: Tensor, b: Tensor): Tensor {
  const d = o.square(o.sub(a, b));
  return o.mean(
    d,
    d.shape.map((_, i) => i).filter((i) => i > 0),
  );
}

/** Σ wᵢ·mseᵢ / N with per-sample weights w [N]. */
export function weightedMse(a: Tensor, b: Tensor, w: Tensor): Tensor {
  return o.mean(o.mul(msePerSample(a, b), w));
}

/** log softmax over the last axis, stabilized: z − m − log Σ exp(z − m) with m = max z. */
export function logSoftmax(logits: Tensor): Tensor {
  const axis = logits.rank - 1;
  const shifted = o.sub(logits, o.max(logits, axis, true)); // [..., K]
  return o.sub(shifted, o.log(o.sum(o.exp(shifted), axis, true))); // [..., K]
}

/**
 * Mean cross-entropy −(1/N) Σᵢ log softmax(zᵢ)[yᵢ] of logits z [N, K] against integer class labels
 * y [N] (int64 or int32). The label's entry is picked by a one-hot mask (y == 0..K−1).
 */
export function crossEntropy(logits: Tensor, labels: Tensor): Tensor {
  if (logits.rank !== 2) throw new Error(`crossEntropy: logits must be [N, K], got [${logits.shape}]`);
  const [n, k] = logits.shape as [number, number];
  if (labels.rank !== 1 || labels.shape[0] !== n) {
    throw new Error(
      `crossEntropy: labels must be [${n}] to match logits [${n}, ${k}], got [${labels.shape}]`,
    );
  }
  if (labels.dtype !== "int64" && labels.dtype !== "int32") {
    throw new Error(`crossEntropy: labels must be int64 or int32 class indices, got ${labels.dtype}`);
  }
  const classes =
    labels.dtype === "int64"
      ? HostTensor.int64(
          Array.from({ length: k }, (_, i) => i),
          [1, k],
        )
      : new HostTensor(
          Int32Array.from({ length: k }, (_, i) => i),
          [1, k],
        );
  const oneHot = o.cast(o.equal(o.reshape(labels, [n, 1]), logits.graph.constant(classes)), "float32"); // [N, K]
  return o.neg(o.div(o.sum(o.mul(logSoftmax(logits), oneHot)), n));
}
