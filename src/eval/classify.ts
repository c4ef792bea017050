/**
 * Running the digit classifier on host images: one compiled graph for a fixed batch size (the last
 * batch is zero-padded), giving class probabilities (softmax of the logits) and the penultimate
 * features φ for the Fréchet distance. Loads the bundled weights from assets/mnist-classifier/,
 * found relative to this file so it works from src/ (tsx) and from dist/ alike.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { readSafetensors } from "../io/safetensors.ts";
import { compileGraph } from "../runtime/compile.ts";
import type { SessionOptions } from "../runtime/options.ts";
import type { CompiledGraph } from "../runtime/session.ts";
import { formatShape, HostTensor } from "../tensor/host.ts";
import * as o from "../tensor/ops.ts";
import { checkParams, ParamScope, type Params } from "../tensor/params.ts";
import { Graph } from "../tensor/symbolic.ts";
import { runInBatches } from "./batched.ts";
import { type ClassifierConfig, checkClassifierConfig, classifier } from "./classifier.ts";

/** assets/mnist-classifier/ of the package (src/eval/ and dist/eval/ are both two levels down). */
export const BUNDLED_CLASSIFIER_DIR = fileURLToPath(
  new URL("../../assets/mnist-classifier/", import.meta.url),
);

export interface Classified {
  readonly n: number;
  /** [N, classes] softmax probabilities, row-major. */
  readonly probs: Float32Array;
  /** [N, features] penultimate features φ, row-major. */
  readonly features: Float32Array;
  /** argmax class of each image. */
  readonly predictions: Int32Array;
}

/**
 * Zero-pads [N,1,28,28] digits to [N,1,32,32] (centred, as `loadMnist({ size: 32 })`); 32×32 images
 * pass through. Anything else is an error that names the shape.
 */
export function toClassifierInput(images: HostTensor, size = 32): HostTensor<"float32"> {
  const [n, c, h, w] = images.shape as [number, number, number, number];
  if (images.dtype !== "float32") throw new Error(`images must be float32, got ${images.dtype}`);
  if (images.shape.length !== 4 || c !== 1 || h !== w || (h !== size && h !== 28)) {
    throw new Error(
      `images must be [N, 1, ${size}, ${size}] or [N, 1, 28, 28] greyscale digits, got ${formatShape(images.shape)}`,
    );
  }
  const src = images.data as Float32Array;
  if (h === size) return images as HostTensor<"float32">;
  const pad = (size - h) / 2;
  const out = new Float32Array(n * size * size);
  for (let i = 0; i < n; i++) {
    for (let y = 0; y < h; y++) {
      out.set(src.subarray((i * h + y) * w, (i * h + y + 1) * w), i * size * size + (y + pad) * size + pad);
    }
  }
  return new HostTensor(out, [n, 1, size, size]);
}

export class DigitClassifier {
  private constructor(
    readonly config: ClassifierConfig,
    readonly batchSize: number,
    private readonly params: Params,
    private readonly graph: CompiledGraph,
  ) {}

  /** Compiles the classifier for `batchSize` images at a time around the given weights. */
  static async create(
    config: ClassifierConfig,
    params: Params,
    opts: { batchSize?: number; session?: SessionOptions } = {},
  ): Promise<DigitClassifier> {
    const b = opts.batchSize ?? 250;
    const s = config.imageSize;
    const g = new Graph();
    const scope = ParamScope.root(g);
    const { logits, features } = classifier(scope, g.input("images", [b, 1, s, s]), config); // [B,K], [B,F]
    checkParams(scope.specs, params, "classifier weights");
    const graph = await compileGraph(g, { probs: o.softmax(logits, -1), features }, opts.session);
    return new DigitClassifier(config, b, params, graph);
  }

  /** Loads config.json + model.safetensors from `dir` (default: the bundled classifier). */
  static async load(
    dir: string = BUNDLED_CLASSIFIER_DIR,
    opts: { batchSize?: number; session?: SessionOptions } = {},
  ): Promise<DigitClassifier> {
    const cfgPath = join(dir, "config.json");
    const weightsPath = join(dir, "model.safetensors");
    for (const p of [cfgPath, weightsPath]) {
      if (!existsSync(p)) {
        throw new Error(`the MNIST classifier is missing ${p}; run \`npx tsx scripts/train-classifier.ts\``);
      }
    }
    let raw: { architecture?: unknown };
    try {
      raw = JSON.parse(readFileSync(cfgPath, "utf8")) as { architecture?: unknown };
    } catch (e) {
      throw new Error(`${cfgPath}: not valid JSON (${(e as Error).message})`);
    }
    const config = checkClassifierConfig(raw.architecture, cfgPath);
    const params: Params = new Map();
    for (const [k, t] of readSafetensors(weightsPath).tensors) {
      if (t.dtype !== "float32") throw new Error(`${weightsPath}: tensor "${k}" must be a float tensor`);
      params.set(k, t as HostTensor<"float32">);
    }
    return DigitClassifier.create(config, params, opts);
  }

  /** Probabilities and features for images [N,1,32,32] (or 28×28) with values in [0,1]. */
  async classify(images: HostTensor): Promise<Classified> {
    const x = toClassifierInput(images, this.config.imageSize);
    const n = x.shape[0]!;
    const k = this.config.classes;
    const f = this.config.features;
    const probs = new Float32Array(n * k);
    const features = new Float32Array(n * f);
    await runInBatches(this.graph, this.params, "images", x, this.batchSize, (out, at, m) => {
      probs.set((out["probs"]!.data as Float32Array).subarray(0, m * k), at * k);
      features.set((out["features"]!.data as Float32Array).subarray(0, m * f), at * f);
    });
    const predictions = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      let best = 0;
      for (let j = 1; j < k; j++) if (probs[i * k + j]! > probs[i * k + best]!) best = j;
      predictions[i] = best;
    }
    return { n, probs, features, predictions };
  }

  dispose(): void {
    this.graph.dispose();
  }
}
