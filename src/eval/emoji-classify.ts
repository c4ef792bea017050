/**
 * Running the emoji judge (emoji-judge.ts) on host images: one compiled graph for a fixed batch
 * (batched.ts), giving per image the five most likely identities with their probabilities, the
 * vendor probabilities and the features φ for the Fréchet distance. Larger images are shrunk to
 * the judge's side by averaging k×k blocks (the area filter the data set uses). Loads the bundled
 * weights from assets/judges/emoji/, found relative to this file (src/eval/ and dist/eval/ alike).
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
import { checkEmojiJudgeConfig, type EmojiJudgeConfig, emojiJudge } from "./emoji-judge.ts";

/** assets/judges/emoji/ of the package. */
export const BUNDLED_EMOJI_JUDGE_DIR = fileURLToPath(new URL("../../assets/judges/emoji/", import.meta.url));

/** How many ranked identities `classify` keeps per image. */
export const TOP_K = 5;

export interface EmojiJudged {
  readonly n: number;
  /** [N, 5] the most likely identity ids, most likely first. */
  readonly identityTop: Int32Array;
  /** [N, 5] their probabilities. */
  readonly identityTopProbs: Float32Array;
  /** [N, vendors] vendor probabilities (0 twitter, 1 google). */
  readonly vendorProbs: Float32Array;
  /** [N, F] features φ. */
  readonly features: Float32Array;
}

/** Images [N, 3, S·k, S·k] → [N, 3, S, S] by k×k block means; S×S images pass through. */
export function toJudgeInput(images: HostTensor, size: number): HostTensor<"float32"> {
  if (images.dtype !== "float32") throw new Error(`images must be float32, got ${images.dtype}`);
  const [n, c, h, w] = images.shape as [number, number, number, number];
  if (images.shape.length !== 4 || c !== 3 || h !== w || h % size !== 0) {
    throw new Error(
      `the emoji judge takes RGB images [N, 3, ${size}·k, ${size}·k] (e.g. ${size} or ${2 * size}), got ${formatShape(images.shape)}`,
    );
  }
  const src = images.data as Float32Array;
  if (h === size) return images as HostTensor<"float32">;
  const k = h / size;
  const out = new Float32Array(n * c * size * size);
  for (let p = 0; p < n * c; p++) {
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        let s = 0;
        for (let dy = 0; dy < k; dy++) {
          const row = p * h * w + (y * k + dy) * w + x * k;
          for (let dx = 0; dx < k; dx++) s += src[row + dx]!;
        }
        out[(p * size + y) * size + x] = s / (k * k);
      }
    }
  }
  return new HostTensor(out, [n, c, size, size]);
}

export class EmojiJudge {
  private constructor(
    readonly config: EmojiJudgeConfig,
    readonly batchSize: number,
    private readonly params: Params,
    private readonly graph: CompiledGraph,
  ) {}

  /** Compiles the judge for `batchSize` images at a time around the given weights. */
  static async create(
    config: EmojiJudgeConfig,
    params: Params,
    opts: { batchSize?: number; session?: SessionOptions } = {},
  ): Promise<EmojiJudge> {
    const b = opts.batchSize ?? 256;
    const s = config.imageSize;
    const g = new Graph();
    const scope = ParamScope.root(g);
    const out = emojiJudge(scope, g.input("images", [b, 3, s, s]), config);
    checkParams(scope.specs, params, "emoji judge weights");
    const graph = await compileGraph(
      g,
      { identity: o.softmax(out.identity, -1), vendor: o.softmax(out.vendor, -1), features: out.features },
      opts.session,
    );
    return new EmojiJudge(config, b, params, graph);
  }

  /** Loads config.json + model.safetensors from `dir` (default: the bundled judge). */
  static async load(
    dir: string = BUNDLED_EMOJI_JUDGE_DIR,
    opts: { batchSize?: number; session?: SessionOptions } = {},
  ): Promise<EmojiJudge> {
    const cfgPath = join(dir, "config.json");
    const weightsPath = join(dir, "model.safetensors");
    for (const p of [cfgPath, weightsPath]) {
      if (!existsSync(p)) {
        throw new Error(`the emoji judge is missing ${p}; run \`npx tsx scripts/train-emoji-judge.ts\``);
      }
    }
    let raw: { architecture?: unknown };
    try {
      raw = JSON.parse(readFileSync(cfgPath, "utf8")) as { architecture?: unknown };
    } catch (e) {
      throw new Error(`${cfgPath}: not valid JSON (${(e as Error).message})`);
    }
    const config = checkEmojiJudgeConfig(raw.architecture, cfgPath);
    const params: Params = new Map();
    for (const [k, t] of readSafetensors(weightsPath).tensors) {
      if (t.dtype !== "float32") throw new Error(`${weightsPath}: tensor "${k}" must be a float tensor`);
      params.set(k, t as HostTensor<"float32">);
    }
    return EmojiJudge.create(config, params, opts);
  }

  /** Ranked identities, vendor probabilities and features of RGB images [N, 3, S·k, S·k] in [0, 1]. */
  async classify(images: HostTensor): Promise<EmojiJudged> {
    const x = toJudgeInput(images, this.config.imageSize);
    const n = x.shape[0]!;
    const ids = this.config.identities;
    const v = this.config.vendors;
    const f = this.config.features;
    const identityTop = new Int32Array(n * TOP_K);
    const identityTopProbs = new Float32Array(n * TOP_K);
    const vendorProbs = new Float32Array(n * v);
    const features = new Float32Array(n * f);
    await runInBatches(this.graph, this.params, "images", x, this.batchSize, (out, at, m) => {
      const probs = out["identity"]!.data as Float32Array;
      for (let i = 0; i < m; i++) {
        const row = probs.subarray(i * ids, (i + 1) * ids);
        const top = topK(row, TOP_K);
        top.forEach((id, r) => {
          identityTop[(at + i) * TOP_K + r] = id;
          identityTopProbs[(at + i) * TOP_K + r] = row[id]!;
        });
      }
      vendorProbs.set((out["vendor"]!.data as Float32Array).subarray(0, m * v), at * v);
      features.set((out["features"]!.data as Float32Array).subarray(0, m * f), at * f);
    });
    return { n, identityTop, identityTopProbs, vendorProbs, features };
  }

  dispose(): void {
    this.graph.dispose();
  }
}

/** Indices of the k largest values, largest first (ties: the lower index first). */
export function topK(values: ArrayLike<number>, k: number): number[] {
  const best: number[] = [];
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (best.length === k && v <= values[best[k - 1]!]!) continue;
    let at = best.length === k ? k - 1 : best.length;
    while (at > 0 && values[best[at - 1]!]! < v) at--;
    best.splice(at, 0, i);
    if (best.length > k) best.pop();
  }
  return best;
}
