/**
 * The AutoencoderKL forward passes (latent diffusion's KL autoencoder, Rombach et al. 2022; diffusers'
 * `Encoder`, `Decoder` and `AutoencoderKL.encode/decode`) as functions over a parameter scope, built
 * from the U-Net's blocks with no time embedding (models/unet/blocks.ts):
 *
 *   encode  x → conv_in → DownEncoderBlock2D × B (L resnets; a stride-2 conv but in the last)
 *             → mid block (resnet → attention → resnet) → GN → SiLU → conv_out [2·latent]
 *             → quant_conv (1×1) → mean | logvar (logvar clamped to [−30, 20])
 *   decode  z → post_quant_conv (1×1) → conv_in → mid block
 *             → UpDecoderBlock2D × B (L + 1 resnets; nearest ×2 + conv but in the last) → GN → SiLU → conv_out
 *
 * The posterior is the diagonal Gaussian N(mean, exp(logvar)); sampling it (mean + σ·ε) and scaling
 * latents for a diffusion model are the caller's (model.ts, train/). Norms use ε = 1e-6 as diffusers'
 * Encoder/Decoder; attention is one head over all channels of the deepest level.
 *
 * Parameter names are diffusers' state-dict names; `vaeParamSpecs` lists them in diffusers' order.
 */
import { silu } from "../../nn/activations.ts";
import { conv2d } from "../../nn/linear.ts";
import { groupNorm } from "../../nn/norm.ts";
import * as o from "../../tensor/ops.ts";
import { initParams, ParamScope, type ParamSpec, type Params } from "../../tensor/params.ts";
import type { Rng } from "../../tensor/rng.ts";
import { Graph, type Tensor } from "../../tensor/symbolic.ts";
import type { DiffusersConfig } from "../config-fields.ts";
import {
  type AttentionBlockOptions,
  type BlockContext,
  downBlock2D,
  midBlock2D,
  resnetBlock2D,
  upsample2D,
} from "../unet/blocks.ts";
import { sortStateDict } from "../unet/unet.ts";
import {
  type AutoencoderKLConfig,
  resolveVaeConfig,
  VAE_NORM_EPS,
  vaeDownsamplingSteps,
  vaeScaleFactor,
} from "./config.ts";

/** diffusers clamps the posterior's log-variance to this range (DiagonalGaussianDistribution). */
export const LOGVAR_RANGE = [-30, 20] as const;

/** What every resnet of the VAE shares: no time embedding, ε = 1e-6, no dropout. */
function blockContext(c: AutoencoderKLConfig): BlockContext {
  return {
    tembAct: null,
    groups: c.normNumGroups,
    eps: VAE_NORM_EPS,
    timeShift: "default",
    dropout: (x) => x,
  };
}

/** The mid block's attention: one head spanning the deepest level's channels (or none). */
function midAttention(c: AutoencoderKLConfig): AttentionBlockOptions | null {
  const ch = c.blockOutChannels[c.blockOutChannels.length - 1]!;
  return c.midBlockAddAttention ? { headDim: ch, groups: c.normNumGroups, eps: VAE_NORM_EPS } : null;
}

/** GN → SiLU → conv3×3 (the encoder's and decoder's output head; SiLU whatever act_fn says, as diffusers). */
function outputHead(p: ParamScope, c: AutoencoderKLConfig, h: Tensor, cout: number): Tensor {
  const a = silu(groupNorm(p.sub("conv_norm_out"), h, c.normNumGroups, VAE_NORM_EPS));
  return conv2d(p.sub("conv_out"), a, cout, 3, { padding: 1 });
}

/** diffusers' Encoder: x [N, in, H, W] → moments [N, 2·latent, H/f, W/f] (before quant_conv). */
export function vaeEncoder(p: ParamScope, c: AutoencoderKLConfig, x: Tensor): Tensor {
  const ctx = blockContext(c);
  const last = c.blockOutChannels.length - 1;
  let h = conv2d(p.sub("conv_in"), x, c.blockOutChannels[0]!, 3, { padding: 1 }); // [N, C0, H, W]
  c.blockOutChannels.forEach((cout, i) => {
    const block = downBlock2D(p.sub("down_blocks").sub(i), h, ctx, {
      cout,
      layers: c.layersPerBlock,
      attention: null,
      downsample: i === last ? null : "conv",
      padding: 0, // pad right/bottom by one, then a stride-2 conv
    });
    h = block.h; // [N, C_i, H/2^(i+1), W/2^(i+1)] (the last block keeps its size)
  });
  h = midBlock2D(p.sub("mid_block"), h, ctx, midAttention(c), 1); // [N, C_last, h, w]
  return outputHead(p, c, h, 2 * c.latentChannels); // [N, 2·latent, h, w]
}

/** diffusers' Decoder: z [N, latent, h, w] (after post_quant_conv) → [N, out, h·f, w·f]. */
export function vaeDecoder(p: ParamScope, c: AutoencoderKLConfig, z: Tensor): Tensor {
  const ctx = blockContext(c);
  const chans = [...c.blockOutChannels].reverse();
  let h = conv2d(p.sub("conv_in"), z, chans[0]!, 3, { padding: 1 }); // [N, C_last, h, w]
  h = midBlock2D(p.sub("mid_block"), h, ctx, midAttention(c), 1); // [N, C_last, h, w]
  chans.forEach((cout, i) => {
    const up = p.sub("up_blocks").sub(i);
    for (let j = 0; j <= c.layersPerBlock; j++) h = resnetBlock2D(up.sub("resnets").sub(j), h, cout, ctx);
    if (i < chans.length - 1) h = upsample2D(up.sub("upsamplers").sub(0), h); // [N, cout, 2h, 2w]
  });
  return outputHead(p, c, h, c.outChannels); // [N, out, H, W]
}

/** The posterior's parameters: mean and (clamped) log-variance, each [N, latent, h, w]. */
export interface VaeMoments {
  readonly mean: Tensor;
  readonly logvar: Tensor;
}

function typed(c: AutoencoderKLConfig | DiffusersConfig): AutoencoderKLConfig {
  const t = c as Partial<AutoencoderKLConfig>;
  return Array.isArray(t.blockOutChannels) && typeof t.latentChannels === "number"
    ? (c as AutoencoderKLConfig)
    : resolveVaeConfig(c);
}

/** Checks an image batch against the config: [N, in_channels, H, W] with H, W multiples of 2^(blocks − 1). */
export function checkVaeInput(c: AutoencoderKLConfig, shape: readonly number[], where: string): void {
  const [, ch, h, w] = shape;
  if (shape.length !== 4 || ch !== c.inChannels) {
    throw new Error(
      `${where}: images must be [N, ${c.inChannels}, H, W] (in_channels), got [${shape.join(", ")}]`,
    );
  }
  const f = vaeScaleFactor(c);
  if (h! % f !== 0 || w! % f !== 0) {
    throw new Error(
      `${where}: height and width must be multiples of ${f} (2^(blocks − 1) = 2^${vaeDownsamplingSteps(c)}), got ${h}×${w}; pad or resize the images`,
    );
  }
}

/** Checks a latent batch against the config: [N, latent_channels, h, w]. */
export function checkVaeLatent(c: AutoencoderKLConfig, shape: readonly number[], where: string): void {
  if (shape.length !== 4 || shape[1] !== c.latentChannels) {
    throw new Error(
      `${where}: latents must be [N, ${c.latentChannels}, h, w] (latent_channels), got [${shape.join(", ")}]`,
    );
  }
}

/**
 * Encodes images x [N, in, H, W] (values in [−1, 1] by convention) to the posterior's mean and
 * log-variance [N, latent, H/f, W/f]; usable inside a training graph. `scope` is the model's root scope.
 */
export function vaeEncode(
  scope: ParamScope,
  config: AutoencoderKLConfig | DiffusersConfig,
  x: Tensor,
): VaeMoments {
  const c = typed(config);
  checkVaeInput(c, x.shape, "vaeEncode");
  let moments = vaeEncoder(scope.sub("encoder"), c, x); // [N, 2·latent, h, w]
  if (c.useQuantConv) moments = conv2d(scope.sub("quant_conv"), moments, 2 * c.latentChannels, 1);
  const [mean, logvar] = o.split(moments, 1, 2) as [Tensor, Tensor]; // [N, latent, h, w] each
  const clamped = o.minimum(o.maximum(logvar, LOGVAR_RANGE[0]), LOGVAR_RANGE[1]);
  return { mean, logvar: clamped };
}

/** Decodes latents z [N, latent, h, w] (unscaled: divide by scaling_factor first) to [N, out, h·f, w·f]. */
export function vaeDecode(
  scope: ParamScope,
  config: AutoencoderKLConfig | DiffusersConfig,
  z: Tensor,
): Tensor {
  const c = typed(config);
  checkVaeLatent(c, z.shape, "vaeDecode");
  const zq = c.usePostQuantConv ? conv2d(scope.sub("post_quant_conv"), z, c.latentChannels, 1) : z;
  return vaeDecoder(scope.sub("decoder"), c, zq);
}

/** diffusers registers the encoder, the decoder, then the two 1×1 convolutions. */
const TOP_ORDER = ["encoder", "decoder", "quant_conv", "post_quant_conv"];

/** Every parameter (name, shape, PyTorch-default init), in diffusers' state-dict order. */
export function vaeParamSpecs(config: AutoencoderKLConfig | DiffusersConfig): ParamSpec[] {
  const c = typed(config);
  const graph = new Graph();
  const f = vaeScaleFactor(c);
  const scope = ParamScope.root(graph);
  vaeEncode(scope, c, graph.input("x", [1, c.inChannels, f, f]));
  vaeDecode(scope, c, graph.input("z", [1, c.latentChannels, 1, 1]));
  const specs = scope.specs;
  return TOP_ORDER.flatMap((top) => sortStateDict(specs.filter((s) => s.name.split(".")[0] === top)));
}

/** Fresh parameters (PyTorch's default initialization; each from its own stream of `rng`). */
export function initVae(config: AutoencoderKLConfig | DiffusersConfig, rng: Rng): Params {
  return initParams(vaeParamSpecs(config), rng);
}
