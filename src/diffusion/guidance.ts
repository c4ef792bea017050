/**
 * Classifier-free guidance (Ho & Salimans 2022): ε̃ = ε(x, ∅) + w·(ε(x, c) − ε(x, ∅)), with both
 * predictions from ONE batched forward pass, and guidance rescale φ (Lin et al. 2023, "Common Diffusion
 * Noise Schedules and Sample Steps are Flawed", §3.4), which rescales ε̃ to the per-sample standard
 * deviation of ε(x, c) to undo over-exposure at large w, then mixes: φ·rescaled + (1 − φ)·ε̃.
 * Float32 arithmetic in diffusers' order (its pipelines and `rescale_noise_cfg`).
 */

import { HostTensor } from "../tensor/host.ts";
import { batchOf, type Conditioning, concatConditions } from "./conditioning.ts";
import { asF32, type F32, f32, zip } from "./float32.ts";
import type { Network } from "./parameterization.ts";

/** ε(∅) + w·(ε(c) − ε(∅)). */
export function combineGuidance(uncond: F32, cond: F32, scale: number): F32 {
  const w = f32(scale);
  return zip(uncond, cond, (u, c) => u + f32(w * f32(c - u)));
}

/** The unbiased (N − 1) standard deviation of each sample (all dimensions but the first). */
function sampleStd(x: F32): number[] {
  const n = x.shape[0] ?? 1;
  const per = x.size / n;
  const out: number[] = [];
  for (let b = 0; b < n; b++) {
    let mean = 0;
    for (let i = 0; i < per; i++) mean += x.data[b * per + i]!;
    mean /= per;
    let ss = 0;
    for (let i = 0; i < per; i++) ss += (x.data[b * per + i]! - mean) ** 2;
    out.push(f32(Math.sqrt(ss / (per - 1))));
  }
  return out;
}

/** Guidance rescale: φ·ε̃·(std(ε(c))/std(ε̃)) + (1 − φ)·ε̃, per sample (diffusers' `rescale_noise_cfg`). */
export function rescaleNoiseCfg(guided: F32, cond: F32, rescale: number): F32 {
  const stdCond = sampleStd(cond);
  const stdGuided = sampleStd(guided);
  const per = guided.size / (guided.shape[0] ?? 1);
  const phi = f32(rescale);
  const rest = f32(1 - rescale);
  return zip(guided, cond, (g, _c, i) => {
    const b = Math.floor(i / per);
    const ratio = f32(stdCond[b]! / stdGuided[b]!);
    return f32(phi * f32(g * ratio)) + f32(rest * g);
  });
}

function halves(x: F32): [F32, F32] {
  const n = (x.shape[0] ?? 0) / 2;
  const shape = [n, ...x.shape.slice(1)];
  const half = x.size / 2;
  return [new HostTensor(x.data.slice(0, half), shape), new HostTensor(x.data.slice(half), shape)];
}

export interface GuidanceOptions {
  /** Guidance rescale φ ∈ [0, 1] (0: off). */
  rescale?: number;
}

/**
 * A guided network from a batched one. `batched` receives the input twice along the batch dimension
 * (2N rows) and must predict rows 0..N−1 without the condition (∅) and rows N..2N−1 with it — the order
 * diffusers pipelines use; one forward pass serves both.
 */
export function guidedNetwork(batched: Network, scale: number, options: GuidanceOptions = {}): Network {
  const rescale = options.rescale ?? 0;
  if (!(rescale >= 0 && rescale <= 1)) throw new Error(`guidance rescale must be in [0, 1], got ${rescale}`);
  return async (x, t) => {
    const xf = asF32(x, "guided network input");
    const both = new Float32Array(xf.size * 2);
    both.set(xf.data);
    both.set(xf.data, xf.size);
    const out = asF32(
      await batched(new HostTensor(both, [(xf.shape[0] ?? 1) * 2, ...xf.shape.slice(1)]), t),
      "output",
    );
    if (out.size !== both.length) {
      throw new Error(`batched network returned ${out.size} values for a doubled batch of ${both.length}`);
    }
    const [uncond, cond] = halves(out);
    const guided = combineGuidance(uncond, cond, scale);
    return rescale > 0 ? rescaleNoiseCfg(guided, cond, rescale) : guided;
  };
}

/** A network conditioned on a `Conditioning`: (x [N, …], t, cond for N samples) → prediction [N, …]. */
export type ConditionalNetwork = (
  x: HostTensor,
  t: number,
  cond: Conditioning,
) => HostTensor | Promise<HostTensor>;

/**
 * Classifier-free guidance as a transformation of denoisers over conditions: `cond` and its
 * unconditional counterpart `uncond` (the null label, the empty prompt — or a negative prompt, which
 * is what "negative conditioning" means) become a plain `Network`. Scale 1 asks `net` for the
 * conditional prediction alone and scale 0 for the unconditional one; any other scale makes ONE
 * batched call on [x | x] with [uncond | cond], then ε(∅) + w·(ε(c) − ε(∅)) and the optional rescale.
 */
export function classifierFreeGuidance(
  net: ConditionalNetwork,
  cond: Conditioning,
  uncond: Conditioning,
  scale: number,
  options: GuidanceOptions = {},
): Network {
  if (!Number.isFinite(scale)) throw new Error(`guidance scale must be a finite number, got ${scale}`);
  if (batchOf(cond) !== batchOf(uncond)) {
    throw new Error(
      `the unconditional counterpart is for ${batchOf(uncond)} samples, the condition for ${batchOf(cond)}`,
    );
  }
  if (scale === 1) return (x, t) => net(x, t, cond);
  if (scale === 0) return (x, t) => net(x, t, uncond);
  const both = concatConditions(uncond, cond);
  return guidedNetwork((x, t) => net(x, t, both), scale, options);
}
