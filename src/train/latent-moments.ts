/**
 * The VAE posterior's moments of a text-to-image run's training images, computed once per (run, VAE,
 * images) and cached in the run folder (latents.safetensors): each step then draws z ~ N(mean, std²)
 * on the host (text-task.ts textBatch) instead of running the encoder.
 */
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import type { ImageDataset } from "../data/dataset.ts";
import { readSafetensors, writeSafetensors } from "../io/safetensors.ts";
import type { AutoencoderKL } from "../models/vae/model.ts";
import { HostTensor } from "../tensor/host.ts";

/** The VAE posterior's moments of the training images: N(mean, std²) per latent value. */
export interface LatentMoments {
  mean: Float32Array;
  std: Float32Array;
  /** [N, C, h, w] */
  shape: number[];
}

/** The VAE posterior's moments of every image, computed once per (run, VAE, images) and cached. */
export async function latentMoments(
  vae: AutoencoderKL,
  data: ImageDataset & { readonly captions: readonly string[] },
  cachePath: string,
): Promise<LatentMoments> {
  // the cache is valid for these weights and these images only
  const hash = createHash("sha256");
  for (const [k, v] of vae.params)
    hash.update(k).update(new Uint8Array(v.data.buffer, v.data.byteOffset, v.data.byteLength));
  hash.update(data.captions.join("\n")).update(String(data.height));
  const key = hash.digest("hex");
  if (existsSync(cachePath)) {
    const st = readSafetensors(cachePath);
    const mean = st.tensors.get("mean");
    const std = st.tensors.get("std");
    if (mean && std && st.metadata["key"] === key)
      return { mean: mean.data as Float32Array, std: std.data as Float32Array, shape: [...mean.shape] };
  }
  const per = data.channels * data.height * data.width;
  const chunk = 64;
  let mean: Float32Array | null = null;
  let std: Float32Array | null = null;
  let shape: number[] = [];
  for (let lo = 0; lo < data.count; lo += chunk) {
    const hi = Math.min(data.count, lo + chunk);
    const x = new Float32Array((hi - lo) * per);
    for (let i = 0; i < x.length; i++) x[i] = data.images[lo * per + i]! * 2 - 1;
    const d = await vae.encode(new HostTensor(x, [hi - lo, data.channels, data.height, data.width]));
    if (!mean || !std) {
      shape = [data.count, ...d.mean.shape.slice(1)];
      const n = shape.reduce((a, b) => a * b, 1);
      mean = new Float32Array(n);
      std = new Float32Array(n);
    }
    const lat = d.mean.size / (hi - lo);
    mean.set(d.mean.data as Float32Array, lo * lat);
    std.set(d.std.data as Float32Array, lo * lat);
  }
  writeSafetensors(
    cachePath,
    new Map([
      ["mean", new HostTensor(mean!, shape)],
      ["std", new HostTensor(std!, shape)],
    ]),
    { metadata: { key } },
  );
  return { mean: mean!, std: std!, shape };
}
