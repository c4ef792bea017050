/**
 * Measuring an autoencoder while it trains: the PSNR of held-out reconstructions (the posterior's
 * mean decoded), with a grid of originals over reconstructions, and the spread of its latents that
 * sets `scaling_factor` (latent diffusion's recipe: 1 / std of encoded training images, so the
 * diffusion model sees latents of unit variance).
 *
 * The reconstruction graph takes the weights as inputs, so it is compiled once per run, not once per
 * evaluation.
 */
import type { ImageDataset } from "../data/dataset.ts";
import type { AutoencoderKLConfig } from "../models/vae/config.ts";
import type { AutoencoderKL } from "../models/vae/model.ts";
import { vaeDecode, vaeEncode } from "../models/vae/vae.ts";
import { compile } from "../runtime/compile.ts";
import type { SessionOptions } from "../runtime/options.ts";
import type { CompiledGraph } from "../runtime/session.ts";
import { HostTensor } from "../tensor/host.ts";
import { ParamScope, type Params } from "../tensor/params.ts";
import type { Rng } from "../tensor/rng.ts";

/** PSNR in dB of images in [−1, 1] (the reconstruction clamped to that range): 10·log10(1 / MSE on [0, 1]). */
export function psnr(x: Float32Array, y: Float32Array): number {
  let se = 0;
  for (let i = 0; i < x.length; i++) {
    const d = (x[i]! - Math.min(1, Math.max(-1, y[i]!))) / 2;
    se += d * d;
  }
  return 10 * Math.log10(1 / Math.max(se / x.length, 1e-10));
}

export interface ReconstructionResult {
  /** Mean over the held-out images of each image's PSNR (dB). */
  readonly psnr: number;
  /** The first n originals, then their reconstructions: [2n, C, H, W] in [−1, 1]. */
  grid(n: number): HostTensor<"float32">;
}

/** Reconstructs the held-out images (pixels in [0, 1]) in chunks of `chunk` with given weights. */
export function reconstructionEval(
  c: AutoencoderKLConfig,
  holdout: ImageDataset,
  chunk: number,
  session: SessionOptions,
): { run(params: Params): Promise<ReconstructionResult>; dispose(): void } {
  const per = holdout.channels * holdout.height * holdout.width;
  const images = Float32Array.from(holdout.images, (v) => v * 2 - 1);
  const graphs = new Map<number, Promise<CompiledGraph>>();
  const graphFor = (n: number) => {
    let g = graphs.get(n);
    if (!g) {
      const shape = [n, holdout.channels, holdout.height, holdout.width];
      g = compile(
        { x: { shape } },
        ({ x }, graph) => {
          const scope = ParamScope.root(graph);
          return { recon: vaeDecode(scope, c, vaeEncode(scope, c, x!).mean) };
        },
        { ...session, cache: false },
      );
      graphs.set(n, g);
    }
    return g;
  };
  return {
    async run(params) {
      const recon = new Float32Array(images.length);
      for (let lo = 0; lo < holdout.count; lo += chunk) {
        const n = Math.min(chunk, holdout.count - lo);
        const x = new HostTensor(images.subarray(lo * per, (lo + n) * per), [
          n,
          holdout.channels,
          holdout.height,
          holdout.width,
        ]);
        const out = await (await graphFor(n)).run({ x, ...Object.fromEntries(params) });
        recon.set(out["recon"]!.data as Float32Array, lo * per);
      }
      let total = 0;
      for (let i = 0; i < holdout.count; i++) {
        total += psnr(images.subarray(i * per, (i + 1) * per), recon.subarray(i * per, (i + 1) * per));
      }
      return {
        psnr: total / holdout.count,
        grid(n) {
          const k = Math.min(n, holdout.count);
          const data = new Float32Array(2 * k * per);
          data.set(images.subarray(0, k * per));
          data.set(recon.subarray(0, k * per), k * per);
          return new HostTensor(data, [2 * k, holdout.channels, holdout.height, holdout.width]);
        },
      };
    },
    dispose() {
      for (const g of graphs.values()) g.then((s) => s.dispose()).catch(() => {});
      graphs.clear();
    },
  };
}

/**
 * The standard deviation (unbiased, over every element) of posterior samples z = μ + σ·ε of up to
 * `count` images spread over the dataset (pixels in [0, 1]), as latent diffusion measures it.
 */
export async function latentStd(
  vae: AutoencoderKL,
  data: ImageDataset,
  count: number,
  rng: Rng,
): Promise<number> {
  const per = data.channels * data.height * data.width;
  const n = Math.min(count, data.count);
  const x = new Float32Array(n * per);
  for (let i = 0; i < n; i++) {
    const src = Math.floor((i * data.count) / n);
    for (let j = 0; j < per; j++) x[i * per + j] = data.images[src * per + j]! * 2 - 1;
  }
  const dist = await vae.encode(new HostTensor(x, [n, data.channels, data.height, data.width]));
  const z = dist.sample(rng).data;
  let mean = 0;
  for (const v of z) mean += v;
  mean /= z.length;
  let ss = 0;
  for (const v of z) ss += (v - mean) ** 2;
  return Math.sqrt(ss / Math.max(1, z.length - 1));
}
