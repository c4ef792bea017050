/**
 * The emoji judge: a small all-convolutional network with two heads, which emoji (identity, 3,786
 * classes) and in whose style (vendor, 2), and a feature vector for Fréchet distances (the role
 * Inception's pool features play in FID, Heusel et al. 2017).
 *
 *   x [N,3,S,S] in [0,1] → 2x − 1 → per stage: 4×4 conv, stride 2 → ReLU   (S → S/2 → … → S/2ᵏ)
 *     → flatten → fc → features φ(x) [N,F]
 *     → identity logits s · cos(φ, wᵢ) [N,3786]     vendor logits: linear(φ) [N,2]
 *
 * The identity head is a cosine classifier (Gidaris & Komodakis 2018; Qi, Brown & Lowe 2018): the
 * logit of identity i is the cosine between φ and a weight row wᵢ, times a fixed scale s. With two
 * images per identity a plain linear head learns slowly (each row is pulled up by two images per
 * epoch); normalized rows can instead be set ("imprinted") to the mean direction of an identity's
 * features after training, which train-emoji-judge.ts does, so that the head ranks identities by
 * how close φ is to each one's real images.
 *
 * Strided convolutions in place of the MNIST judge's conv + max-pool stages (classifier.ts) cost
 * about a third as much per training step on the CPU, which matters with 3,786 classes to fit.
 * No batch statistics, so training and inference run one graph. Parameter names follow PyTorch
 * (`convs.0.weight`, `fc.bias`, `identity.weight`, `vendor.weight`).
 */
import { conv2d, linear, relu } from "../nn/index.ts";
import * as o from "../tensor/ops.ts";
import type { ParamScope } from "../tensor/params.ts";
import type { Tensor } from "../tensor/symbolic.ts";

export interface EmojiJudgeConfig {
  /** Output channels of the stride-2 conv stages; each halves the resolution. */
  readonly channels: readonly number[];
  /** Width F of the feature vector φ. */
  readonly features: number;
  /** Number of identities (the emoji catalog's, 3,786). */
  readonly identities: number;
  /** Number of vendors (2: twitter, google). */
  readonly vendors: number;
  /** The scale s of the cosine identity logits. */
  readonly identityScale: number;
  /** Side of the square RGB input. */
  readonly imageSize: number;
}

export const defaultEmojiJudgeConfig: EmojiJudgeConfig = {
  channels: [32, 64, 128, 256],
  features: 256,
  identities: 3786,
  vendors: 2,
  identityScale: 16,
  imageSize: 32,
};

export interface EmojiJudgeOutputs {
  /** [N, identities] unnormalized log-probabilities. */
  identity: Tensor;
  /** [N, vendors] unnormalized log-probabilities. */
  vendor: Tensor;
  /** [N, features] φ(x). */
  features: Tensor;
}

/**
 * The judge over images x [N,3,S,S] with values in [0,1]. `keep` [N, F], when given, scales the
 * features entering the heads (a dropout mask while training); `features` is returned unmasked.
 */
export function emojiJudge(
  p: ParamScope,
  x: Tensor,
  config: EmojiJudgeConfig,
  keep?: Tensor,
): EmojiJudgeOutputs {
  const s = config.imageSize;
  if (x.rank !== 4 || x.shape[1] !== 3 || x.shape[2] !== s || x.shape[3] !== s) {
    throw new Error(`emoji judge: input must be [N, 3, ${s}, ${s}], got [${x.shape}]`);
  }
  let h = o.sub(o.mul(x, 2), 1); // [N, 3, S, S] in [−1, 1]
  config.channels.forEach((c, i) => {
    h = relu(conv2d(p.sub("convs").sub(i), h, c, 4, { stride: 2, padding: 1 })); // [N, c, S/2^(i+1), …]
  });
  const n = x.shape[0]!;
  const flat = o.reshape(h, [n, -1]); // [N, c·(S/2^k)²]
  const features = linear(p.sub("fc"), flat, config.features); // [N, F]
  const f = keep ? o.mul(features, keep) : features;
  const w = p.param("identity.weight", [config.identities, config.features], { kind: "normal", std: 1 });
  const cos = o.matmul(unitRows(f), o.transpose(unitRows(w), [1, 0])); // [N, identities]
  return {
    identity: o.mul(cos, config.identityScale), // [N, identities]
    vendor: linear(p.sub("vendor"), f, config.vendors), // [N, vendors]
    features,
  };
}

/** Each row of a [R, F] matrix scaled to unit length. */
function unitRows(x: Tensor): Tensor {
  return o.mul(x, o.rsqrt(o.add(o.sum(o.square(x), -1, true), 1e-12))); // [R, F]
}

/** Checks a config read from disk; the message names the bad field. */
export function checkEmojiJudgeConfig(c: unknown, where: string): EmojiJudgeConfig {
  const r = (c ?? {}) as Record<string, unknown>;
  const posInt = (v: unknown) => typeof v === "number" && Number.isInteger(v) && v > 0;
  if (!Array.isArray(r["channels"]) || r["channels"].length === 0 || !r["channels"].every(posInt)) {
    throw new Error(`${where}: "channels" must be a non-empty list of positive integers`);
  }
  for (const k of ["features", "identities", "vendors", "imageSize"]) {
    if (!posInt(r[k]))
      throw new Error(`${where}: "${k}" must be a positive integer, got ${JSON.stringify(r[k])}`);
  }
  const scale = r["identityScale"];
  if (typeof scale !== "number" || !(scale > 0)) {
    throw new Error(`${where}: "identityScale" must be a positive number, got ${JSON.stringify(scale)}`);
  }
  const size = r["imageSize"] as number;
  const stages = (r["channels"] as number[]).length;
  if (size % 2 ** stages !== 0) {
    throw new Error(`${where}: imageSize ${size} must be divisible by 2^${stages} (one halving per stage)`);
  }
  return {
    channels: r["channels"] as number[],
    features: r["features"] as number,
    identities: r["identities"] as number,
    vendors: r["vendors"] as number,
    identityScale: scale,
    imageSize: size,
  };
}
