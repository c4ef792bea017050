/**
 * Embeddings: a lookup table (nn.Embedding) and the sinusoidal timestep embedding of "Attention is
 * all you need" as diffusion models use it (DDPM; diffusers' get_timestep_embedding).
 */
import { HostTensor } from "../tensor/host.ts";
import * as o from "../tensor/ops.ts";
import { type Init, init, type ParamScope } from "../tensor/params.ts";
import type { Tensor } from "../tensor/symbolic.ts";

/** Rows of a [num, dim] table picked by int64 ids; initialized N(0, 1) as nn.Embedding (or as given). */
export function embedding(p: ParamScope, ids: Tensor, num: number, dim: number, how?: Init): Tensor {
  const table = p.param("weight", [num, dim], how ?? init.normal(1));
  return o.gather(table, ids); // [...ids, dim]
}

export interface TimestepEmbeddingOptions {
  /** Put cos before sin (diffusers' flip_sin_to_cos). */
  flipSinToCos?: boolean;
  /** diffusers' downscale_freq_shift (freq_shift in UNet configs). */
  freqShift?: number;
  scale?: number;
  maxPeriod?: number;
}

/** The frequencies exp(−ln(maxPeriod)·i/(half − shift)), computed in float32 as PyTorch does. */
export function timestepFrequencies(dim: number, shift = 1, maxPeriod = 10000): Float32Array {
  const half = Math.floor(dim / 2);
  const f = new Float32Array(half);
  const lnP = Math.fround(-Math.log(maxPeriod));
  for (let i = 0; i < half; i++) f[i] = Math.exp(Math.fround(Math.fround(lnP * i) / (half - shift)));
  return f;
}

/** t [N] (float32) → [N, dim]: [sin(t·f), cos(t·f)] (or cos first), zero-padded when dim is odd. */
export function timestepEmbedding(t: Tensor, dim: number, opts: TimestepEmbeddingOptions = {}): Tensor {
  const freqs = timestepFrequencies(dim, opts.freqShift ?? 1, opts.maxPeriod ?? 10000);
  const half = freqs.length;
  const f = t.graph.constant(new HostTensor(freqs, [1, half]));
  let arg = o.mul(o.reshape(o.cast(t, "float32"), [-1, 1]), f); // [N, half]
  if (opts.scale !== undefined && opts.scale !== 1) arg = o.mul(arg, opts.scale);
  const sin = o.sin(arg);
  const cos = o.cos(arg);
  let emb = opts.flipSinToCos ? o.concat([cos, sin], 1) : o.concat([sin, cos], 1); // [N, 2·half]
  if (dim % 2 === 1) emb = o.pad(emb, [0, 0, 0, 1]);
  return emb;
}
