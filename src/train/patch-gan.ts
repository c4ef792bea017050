/**
 * The PatchGAN discriminator of pix2pix (Isola et al. 2017) as latent diffusion trains its
 * autoencoders with it (taming-transformers' NLayerDiscriminator, Esser et al. 2021): a stack of 4×4
 * convolutions that scores every overlapping patch of an image as real or fake, [N, C, H, W] →
 * logits [N, 1, h, w].
 *
 *   main.0   conv 4×4 stride 2 (C → ch)           → LeakyReLU(0.2)
 *   main.k   conv 4×4 stride 2, no bias (×2 width, at most 8·ch) → BatchNorm → LeakyReLU   (layers − 1 times)
 *            conv 4×4 stride 1, no bias            → BatchNorm → LeakyReLU
 *            conv 4×4 stride 1 → 1 channel (the patch logits)
 *
 * Names follow nn.Sequential's indices (main.<i>.weight), as the original. BatchNorm always uses the
 * batch's statistics (the discriminator only ever runs in training mode here, so no running averages
 * are kept). Initialization as pix2pix: convolution weights N(0, 0.02), BatchNorm scale 1 (pix2pix draws
 * it from N(1, 0.02)) and shift 0.
 */
import { conv2d } from "../nn/linear.ts";
import { standardize } from "../nn/norm.ts";
import * as o from "../tensor/ops.ts";
import { init, ParamScope, type ParamSpec } from "../tensor/params.ts";
import { Graph, type Tensor } from "../tensor/symbolic.ts";

export interface PatchGanOptions {
  /** Stride-2 convolutions (3 in pix2pix and latent diffusion: 70×70 patches). */
  readonly layers: number;
  /** Width of the first convolution (64 in pix2pix). */
  readonly channels: number;
}

const leakyRelu = (x: Tensor): Tensor => o.maximum(x, o.mul(x, 0.2));

/** nn.BatchNorm2d in training mode: per-channel statistics over the batch and the positions. */
function batchNorm(p: ParamScope, x: Tensor): Tensor {
  const c = x.shape[1]!;
  const y = standardize(x, [0, 2, 3], 1e-5); // [N, C, H, W]
  const w = o.reshape(p.param("weight", [c], init.ones()), [1, c, 1, 1]);
  const b = o.reshape(p.param("bias", [c], init.zeros()), [1, c, 1, 1]);
  return o.add(o.mul(y, w), b);
}

/** The side of the logit map for an input side (each 4×4 conv with padding 1: stride 2 → ⌊s/2⌋, stride 1 → s − 1). */
export function patchGanOutputSide(side: number, layers: number): number {
  let s = side;
  for (let i = 0; i < layers; i++) s = Math.floor(s / 2);
  return s - 2;
}

/** Checks that images of `side` pixels leave at least one patch after `layers` stride-2 convolutions. */
export function checkPatchGan(side: number, opts: PatchGanOptions): void {
  if (patchGanOutputSide(side, opts.layers) < 1) {
    throw new Error(
      `the discriminator's ${opts.layers} stride-2 layers leave no patch of a ${side}×${side} image; use fewer disc_layers (at most ${maxLayers(side)})`,
    );
  }
}

function maxLayers(side: number): number {
  let n = 0;
  while (patchGanOutputSide(side, n + 1) >= 1) n++;
  return n;
}

/** The discriminator: images [N, C, H, W] → patch logits [N, 1, h, w]. */
export function patchGan(p: ParamScope, x: Tensor, opts: PatchGanOptions): Tensor {
  const w0 = init.normal(0.02);
  const m = p.sub("main");
  let i = 0;
  const conv = (h: Tensor, cout: number, stride: number, bias: boolean) =>
    conv2d(m.sub(i), h, cout, 4, { stride, padding: 1, bias, init: { weight: w0 } });
  let h = leakyRelu(conv(x, opts.channels, 2, true)); // [N, ch, H/2, W/2]
  i += 2;
  let width = opts.channels;
  for (let n = 1; n <= opts.layers; n++) {
    const stride = n < opts.layers ? 2 : 1;
    width = opts.channels * Math.min(2 ** n, 8);
    h = conv(h, width, stride, false); // [N, width, ⌊s/2⌋ or s − 1, …]
    h = leakyRelu(batchNorm(m.sub(i + 1), h));
    i += 3;
  }
  return conv(h, 1, 1, true); // [N, 1, h, w]
}

/** The discriminator's parameters (names, shapes, initializers) for images of `channels` channels. */
export function patchGanSpecs(channels: number, side: number, opts: PatchGanOptions): ParamSpec[] {
  checkPatchGan(side, opts);
  const graph = new Graph();
  const scope = ParamScope.root(graph);
  patchGan(scope, graph.input("x", [1, channels, side, side]), opts);
  return scope.specs;
}

/** Hinge loss of the discriminator: ½(mean relu(1 − D(real)) + mean relu(1 + D(fake))). */
export function hingeDiscriminatorLoss(logitsReal: Tensor, logitsFake: Tensor): Tensor {
  const real = o.mean(o.maximum(o.sub(1, logitsReal), 0));
  const fake = o.mean(o.maximum(o.add(logitsFake, 1), 0));
  return o.mul(o.add(real, fake), 0.5);
}
