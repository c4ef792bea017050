/**
 * LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") at the layer level: a
 * linear or convolution weight W is used as W + s · B·A with A [r, in(, k, k)], B [out, r(, 1, 1)]
 * (PEFT's shapes; a convolution's A is a k×k convolution to r channels and B a 1×1 one, whose
 * composition is the one k×k convolution B·A). The low-rank product is added to the weight rather
 * than run as a side branch on the activations: for the same result it costs out·r·in multiply-adds
 * per layer instead of N·L·r·(in + out) per batch, and with constant A and B (inference) ONNX
 * Runtime folds it into the weight once. In training W is a frozen constant and only A and B are
 * graph inputs, differentiated through the product.
 *
 * Which layers get an adapter is a `LoraPlan` carried by the ParamScope; `loraTargets` gives PEFT's
 * matching rule for `target_modules`.
 */
import * as o from "../tensor/ops.ts";
import { init, type LoraPlan, type LoraSite, type ParamScope } from "../tensor/params.ts";
import type { Tensor } from "../tensor/symbolic.ts";

/** PEFT's default targets: diffusers' attention projections and CLIP's. */
export const UNET_LORA_TARGETS: readonly string[] = ["to_q", "to_k", "to_v", "to_out.0"];
export const TEXT_LORA_TARGETS: readonly string[] = ["q_proj", "k_proj", "v_proj", "out_proj"];

/** Adapter parameter names of a layer (PEFT's in-model names). */
export const loraNames = (layer: string, adapter: string): { a: string; b: string } => ({
  a: `${layer}.lora_A.${adapter}.weight`,
  b: `${layer}.lora_B.${adapter}.weight`,
});

/**
 * PEFT's `target_modules` rule: a list matches a layer whose name equals an entry or ends with
 * `.<entry>`; a single string is a regular expression that must match the whole name.
 */
export function loraTargets(targets: readonly string[] | string): (layer: string) => boolean {
  if (typeof targets === "string") {
    let re: RegExp;
    try {
      re = new RegExp(`^(?:${targets})$`);
    } catch (e) {
      throw new Error(
        `LoRA target pattern ${JSON.stringify(targets)} is not a regular expression: ${(e as Error).message}`,
      );
    }
    return (layer) => re.test(layer);
  }
  const list = [...targets];
  return (layer) => list.some((t) => layer === t || layer.endsWith(`.${t}`));
}

/** A plan that puts one adapter of the given rank and alpha on every matching linear/convolution layer. */
export function uniformLoraPlan(opts: {
  adapter?: string;
  rank: number;
  alpha?: number;
  targets: readonly string[] | string;
  /** Multiplies alpha / rank (the inference-time LoRA scale; default 1). */
  scale?: number;
}): LoraPlan {
  if (!Number.isInteger(opts.rank) || opts.rank < 1)
    throw new Error(`LoRA rank must be a positive integer, got ${opts.rank}`);
  const alpha = opts.alpha ?? opts.rank;
  if (!Number.isFinite(alpha)) throw new Error(`LoRA alpha must be a finite number, got ${opts.alpha}`);
  const match = loraTargets(opts.targets);
  const site: LoraSite = {
    adapter: opts.adapter ?? "default",
    rank: opts.rank,
    scale: (alpha / opts.rank) * (opts.scale ?? 1),
  };
  return (layer, shape) => ((shape.length === 2 || shape.length === 4) && match(layer) ? [site] : []);
}

/**
 * The weight a layer uses: W itself, or W + Σ s·B·A over the adapters the scope's plan puts on it.
 * Called by the linear and convolution layers on their declared weight.
 */
export function adaptedWeight(p: ParamScope, weight: Tensor): Tensor {
  const sites = p.loraSites(weight.shape);
  if (sites.length === 0) return weight;
  const [out, ...rest] = weight.shape as [number, ...number[]];
  const conv = weight.rank === 4;
  if (!conv && weight.rank !== 2)
    throw new Error(`LoRA on ${p.path}: a weight of rank ${weight.rank} is neither linear nor convolution`);
  const fanIn = rest.reduce((a, b) => a * b, 1); // in · k · k
  let w = weight;
  for (const s of sites) {
    const a = p
      .sub("lora_A")
      .sub(s.adapter)
      .param("weight", [s.rank, ...rest], init.torchDefault(fanIn)); // PEFT: kaiming_uniform(a=√5)
    const b = p
      .sub("lora_B")
      .sub(s.adapter)
      .param("weight", conv ? [out, s.rank, 1, 1] : [out, s.rank], init.zeros()); // a new adapter changes nothing
    const ba = o.matmul(o.reshape(b, [out, s.rank]), o.reshape(a, [s.rank, fanIn])); // [out, in·k·k]
    w = o.add(w, o.reshape(o.mul(ba, s.scale), weight.shape));
  }
  return w;
}

/** The host-side delta s·B·A [out, in(, k, k)] (fusing an adapter into its layer's weight). */
export function loraDelta(
  a: { data: Float32Array; shape: readonly number[] },
  b: { data: Float32Array; shape: readonly number[] },
  scale: number,
): Float32Array {
  const r = a.shape[0]!;
  const fanIn = a.data.length / r;
  const out = b.shape[0]!;
  if (b.data.length !== out * r) throw new Error(`LoRA B ${b.shape} does not match A ${a.shape} (rank ${r})`);
  const d = new Float32Array(out * fanIn);
  for (let i = 0; i < out; i++) {
    const row = i * fanIn;
    for (let k = 0; k < r; k++) {
      const bik = b.data[i * r + k]! * scale;
      if (bik === 0) continue;
      const ak = k * fanIn;
      for (let j = 0; j < fanIn; j++) d[row + j]! += bik * a.data[ak + j]!;
    }
  }
  return d;
}
