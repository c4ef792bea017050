/**
 * The MNIST judge: a small convolutional digit classifier (LeNet-style: three stages of
 * 3×3 conv → ReLU → 2×2 max pool, then a fully connected feature layer and a linear head).
 *
 *   x [N,1,32,32] in [0,1] → standardize → stage₀ [N,c₀,16,16] → stage₁ [N,c₁,8,8] → stage₂ [N,c₂,4,4]
 *     → flatten → fc → ReLU → features φ(x) [N,F] → head → logits [N,10]
 *
 * The features φ are the space of the Fréchet distance (the role Inception's pool features play in
 * FID, Heusel et al. 2017). No batch statistics anywhere, so training and inference run the same
 * graph. Parameter names follow PyTorch (`convs.0.weight`, `fc.bias`, `head.weight`).
 */
import { conv2d, linear, relu } from "../nn/index.ts";
import { HostTensor } from "../tensor/host.ts";
import * as o from "../tensor/ops.ts";
import type { ParamScope } from "../tensor/params.ts";
import type { Tensor } from "../tensor/symbolic.ts";

export interface ClassifierConfig {
  /** Output channels of the conv stages; each stage halves the resolution. */
  readonly channels: readonly number[];
  /** Width F of the penultimate feature vector. */
  readonly features: number;
  readonly classes: number;
  /** Side of the (square, single-channel) input: 32. */
  readonly imageSize: number;
}

export const defaultClassifierConfig: ClassifierConfig = {
  channels: [32, 64, 128],
  features: 128,
  classes: 10,
  imageSize: 32,
};

/** Pixel statistics used to standardize the [0,1] input (MNIST zero-padded to 32×32). */
const PIXEL_MEAN = 0.1;
const PIXEL_STD = 0.3;

/**
 * 2×2 max pooling with stride 2, [N,C,H,W] → [N,C,H/2,W/2]: a fixed one-hot stride-2 convolution
 * lays the four positions of each window out as four channels, then a max reduces over them.
 * (The direct form, a max over the window axes of [N,C,H/2,2,W/2,2], differentiates into 6-D
 * broadcasts that ONNX Runtime runs several times slower than the whole rest of the network.)
 */
export function maxPool2(x: Tensor): Tensor {
  const [n, c, h, w] = x.shape as [number, number, number, number];
  if (h % 2 !== 0 || w % 2 !== 0) throw new Error(`maxPool2: needs even H and W, got [${x.shape}]`);
  const taps = new Float32Array(16); // [4, 1, 2, 2]: tap k picks window position k
  for (let k = 0; k < 4; k++) taps[k * 4 + k] = 1;
  const planes = o.reshape(x, [n * c, 1, h, w]); // [N·C, 1, H, W]
  const windows = o.conv2d(planes, x.graph.constant(new HostTensor(taps, [4, 1, 2, 2])), undefined, {
    stride: 2,
  }); // [N·C, 4, H/2, W/2]
  return o.reshape(o.max(windows, 1), [n, c, h / 2, w / 2]); // [N, C, H/2, W/2]
}

export interface ClassifierOutputs {
  /** [N, classes] unnormalized log-probabilities. */
  logits: Tensor;
  /** [N, features] penultimate activations φ(x) (after the ReLU). */
  features: Tensor;
}

/**
 * The classifier over images x [N,1,S,S] with values in [0,1]. `keep` [N, F], when given, scales
 * the features entering the head (a dropout mask while training); `features` is returned unmasked.
 */
export function classifier(
  p: ParamScope,
  x: Tensor,
  config: ClassifierConfig,
  keep?: Tensor,
): ClassifierOutputs {
  const s = config.imageSize;
  if (x.rank !== 4 || x.shape[1] !== 1 || x.shape[2] !== s || x.shape[3] !== s) {
    throw new Error(`classifier: input must be [N, 1, ${s}, ${s}], got [${x.shape}]`);
  }
  let h = o.div(o.sub(x, PIXEL_MEAN), PIXEL_STD); // [N, 1, S, S]
  config.channels.forEach((c, i) => {
    h = maxPool2(relu(conv2d(p.sub("convs").sub(i), h, c, 3, { padding: 1 }))); // [N, c, S/2^(i+1), …]
  });
  const n = x.shape[0]!;
  const flat = o.reshape(h, [n, -1]); // [N, c·(S/8)²]
  const features = relu(linear(p.sub("fc"), flat, config.features)); // [N, F]
  const logits = linear(p.sub("head"), keep ? o.mul(features, keep) : features, config.classes); // [N, classes]
  return { logits, features };
}

/** Checks a config read from disk; the message names the bad field. */
export function checkClassifierConfig(c: unknown, where: string): ClassifierConfig {
  const r = (c ?? {}) as Record<string, unknown>;
  const posInt = (v: unknown) => typeof v === "number" && Number.isInteger(v) && v > 0;
  if (!Array.isArray(r["channels"]) || !r["channels"].every(posInt)) {
    throw new Error(`${where}: "channels" must be a list of positive integers`);
  }
  for (const k of ["features", "classes", "imageSize"]) {
    if (!posInt(r[k]))
      throw new Error(`${where}: "${k}" must be a positive integer, got ${JSON.stringify(r[k])}`);
  }
  const size = r["imageSize"] as number;
  if (size % 2 ** (r["channels"] as number[]).length !== 0) {
    throw new Error(`${where}: imageSize ${size} must be divisible by 2^(number of stages)`);
  }
  return {
    channels: r["channels"] as number[],
    features: r["features"] as number,
    classes: r["classes"] as number,
    imageSize: size,
  };
}
