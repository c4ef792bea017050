/**
 * The autoencoder objective of latent diffusion (Rombach et al. 2022, App. G; Esser et al. 2021 for
 * the adversarial part) as training-step losses over an AutoencoderKL:
 *
 *   z = μ + σ·ε                    (the reparameterized posterior sample; ε fed per step)
 *   rec = mean |x − D(z)|  or  mean (x − D(z))²             (over every pixel)
 *   KL = (1/N) Σₙ ½ Σ (μ² + σ² − 1 − log σ²)                (summed over the latent, averaged over the batch)
 *   L_G = rec + kl_weight · KL  [+ λ · (−mean PatchGAN(D(z)))  after the GAN warm-up]
 *   L_D = ½ (mean relu(1 − PatchGAN(x)) + mean relu(1 + PatchGAN(D(z))))   (hinge; its own step)
 *
 * This is the reduction diffusers' AutoencoderKL training uses (and the bench peer): a per-pixel mean
 * reconstruction with KL weight ~1e-6. Latent diffusion sums the reconstruction over the pixels
 * instead; its kl_weight w corresponds to w · C·H·W here. There is no LPIPS term and no learned
 * output log-variance.
 *
 * λ is an input of the generator's step: fixed, or adaptive as taming-transformers (λ = w_d ·
 * ‖∇_last rec‖ / (‖∇_last G‖ + 1e-4), clamped to [0, 10⁴], over the decoder's last convolution). The
 * engine has no stop-gradient, so the two norms come out of step k as metrics and set λ for step k + 1.
 * The discriminator's weights enter the generator's step as plain graph inputs (a second root scope:
 * no gradient, no optimizer state), fed from the discriminator's state each step.
 */

import type { AutoencoderKLConfig } from "../models/vae/config.ts";
import { vaeDecode, vaeEncode } from "../models/vae/vae.ts";
import type { InputSpec } from "../runtime/compile.ts";
import { grad } from "../tensor/autodiff.ts";
import * as o from "../tensor/ops.ts";
import { ParamScope } from "../tensor/params.ts";
import type { Tensor } from "../tensor/symbolic.ts";
import { hingeDiscriminatorLoss, type PatchGanOptions, patchGan } from "./patch-gan.ts";
import type { LossFn } from "./train-step.ts";

export type ReconstructionLoss = "l1" | "l2";

/** The graph-input prefix of the discriminator's weights inside the generator's step. */
export const DISC_PREFIX = "discriminator";

export interface VaeLossOptions {
  readonly reconstruction: ReconstructionLoss;
  /** Weight of the KL term (summed over the latent, averaged over the batch). */
  readonly klWeight: number;
  /** The adversarial term, or null before the GAN warm-up ends (or without a discriminator). */
  readonly gan: PatchGanOptions | null;
}

/** KL(N(μ, σ²) ‖ N(0, I)) summed over each sample's latent, averaged over the batch. */
export function klDivergence(mean: Tensor, logvar: Tensor): Tensor {
  const n = mean.shape[0]!;
  const terms = o.sub(o.add(o.square(mean), o.exp(logvar)), o.add(logvar, 1)); // [N, L, h, w]
  return o.mul(o.sum(terms), 0.5 / n);
}

/** mean |a − b| or mean (a − b)² over every element. */
export function reconstructionLoss(kind: ReconstructionLoss, a: Tensor, b: Tensor): Tensor {
  const d = o.sub(a, b);
  return o.mean(kind === "l1" ? o.abs(d) : o.square(d));
}

/** Graph inputs of a generator step: images x and the posterior noise ε (plus λ with the GAN term). */
export function vaeBatchSpecs(
  c: AutoencoderKLConfig,
  batch: number,
  size: number,
  gan: boolean,
): Record<string, InputSpec> {
  const f = 2 ** (c.blockOutChannels.length - 1);
  const specs: Record<string, InputSpec> = {
    x: { shape: [batch, c.inChannels, size, size] },
    noise: { shape: [batch, c.latentChannels, size / f, size / f] },
  };
  if (gan) specs["gan_weight"] = { shape: [] };
  return specs;
}

/** ‖∂y/∂w‖ for one weight. */
const gradNorm = (y: Tensor, w: Tensor): Tensor => o.sqrt(o.sum(o.square(grad(y, [w])[0]!)));

/**
 * The generator's loss. Metrics: rec, kl; with the GAN term also g (−mean logits), the reconstruction
 * `recon` (the discriminator step's fakes), and `rec_grad`, `g_grad` (the norms of the adaptive weight).
 */
export function vaeGeneratorLoss(c: AutoencoderKLConfig, opts: VaeLossOptions): LossFn {
  return (scope, b) => {
    const x = b["x"]!;
    const { mean, logvar } = vaeEncode(scope, c, x); // [B, L, h, w] each
    const z = o.add(mean, o.mul(o.exp(o.mul(logvar, 0.5)), b["noise"]!)); // μ + σ·ε
    const recon = vaeDecode(scope, c, z); // [B, C, H, W]
    const rec = reconstructionLoss(opts.reconstruction, recon, x);
    const kl = klDivergence(mean, logvar);
    const loss = o.add(rec, o.mul(kl, opts.klWeight));
    const metrics: Record<string, Tensor> = { rec, kl };
    if (!opts.gan) return { loss, metrics };
    const disc = ParamScope.root(scope.graph).sub(DISC_PREFIX); // fed, not trained, here
    const g = o.neg(o.mean(patchGan(disc, recon, opts.gan)));
    const last = decoderLastWeight(scope, c);
    return {
      loss: o.add(loss, o.mul(g, b["gan_weight"]!)),
      metrics: { ...metrics, g, recon, rec_grad: gradNorm(rec, last), g_grad: gradNorm(g, last) },
    };
  };
}

/** decoder.conv_out.weight (already declared by the forward; asked again by name). */
function decoderLastWeight(scope: ParamScope, c: AutoencoderKLConfig): Tensor {
  const shape = [c.outChannels, c.blockOutChannels[0]!, 3, 3];
  return scope.sub("decoder").sub("conv_out").param("weight", shape, { kind: "zeros" });
}

/** The adaptive weight λ = w_d · clamp(‖∇rec‖ / (‖∇G‖ + 1e-4), 0, 10⁴) (taming-transformers). */
export function adaptiveGanWeight(recGrad: number, gGrad: number, discWeight: number): number {
  const r = recGrad / (gGrad + 1e-4);
  return discWeight * Math.min(Math.max(Number.isFinite(r) ? r : 0, 0), 1e4);
}

/** Graph inputs of a discriminator step: real images and the generator's reconstructions. */
export function discBatchSpecs(channels: number, batch: number, size: number): Record<string, InputSpec> {
  const shape = [batch, channels, size, size];
  return { real: { shape }, fake: { shape } };
}

/** The discriminator's hinge loss; metrics: the mean logits on real and fake images. */
export function discriminatorLoss(opts: PatchGanOptions): LossFn {
  return (scope, b) => {
    // two passes, as the original: BatchNorm's statistics are the real batch's, then the fake one's
    const real = patchGan(scope, b["real"]!, opts);
    const fake = patchGan(scope, b["fake"]!, opts);
    return {
      loss: hingeDiscriminatorLoss(real, fake),
      metrics: { logits_real: o.mean(real), logits_fake: o.mean(fake) },
    };
  };
}
