/**
 * The UNet2DModel forward pass (DDPM U-Net, Ho et al. 2020; diffusers' `UNet2DModel.forward`) as a
 * function over a parameter scope: `unet2d(scope, cfg, sample, timesteps, classLabels)`.
 *
 *   t → sinusoidal(C0) → time_embedding (Linear → SiLU → Linear) = temb [N, T]   (+ class embedding)
 *   x → conv_in → down blocks (skips kept) → mid block → up blocks (skips used) → GN → SiLU → conv_out
 *
 * Parameter names are diffusers' state-dict names; `unetParamSpecs` lists them in diffusers'
 * state-dict order (the order of `model.state_dict()`), with PyTorch's default initialization.
 */
import { silu } from "../../nn/activations.ts";
import { embedding, timestepEmbedding } from "../../nn/embedding.ts";
import { conv2d, linear } from "../../nn/linear.ts";
import { groupNorm } from "../../nn/norm.ts";
import * as o from "../../tensor/ops.ts";
import { initParams, ParamScope, type ParamSpec, type Params } from "../../tensor/params.ts";
import type { Rng } from "../../tensor/rng.ts";
import { Graph, type Tensor } from "../../tensor/symbolic.ts";
import {
  type AttentionBlockOptions,
  type BlockContext,
  downBlock2D,
  midBlock2D,
  spatialAttention,
  upBlock2D,
} from "./blocks.ts";
import {
  classConditioning,
  type DiffusersConfig,
  downsamplingSteps,
  resolveUNetConfig,
  timeEmbedDim,
  type UNet2DConfig,
} from "./config.ts";

export interface UNetForwardOptions {
  /**
   * Training dropout. diffusers drops activations inside every ResnetBlock2D with probability
   * `dropout`; a traced graph has no randomness of its own, so for `dropout > 0` a training step
   * passes this function, which gives U[0, 1) noise of the asked shape for dropout site `index`
   * (0, 1, … in forward order), typically a graph input fed fresh noise each step
   * (`dropoutNoiseInputs`). An element is dropped where noise < p and the rest scaled by 1/(1 − p),
   * as nn.Dropout. Without it (or with dropout 0) there is no dropout: inference.
   */
  readonly dropoutNoise?: (shape: readonly number[], index: number) => Tensor;
}

/** Prefix of the graph inputs that `dropoutNoiseInputs` declares. */
export const DROPOUT_NOISE_PREFIX = "dropout_noise.";

/** A `dropoutNoise` that declares one graph input `dropout_noise.<index>` per site (feed U[0, 1) noise). */
export function dropoutNoiseInputs(graph: Graph): (shape: readonly number[], index: number) => Tensor {
  return (shape, index) => graph.input(`${DROPOUT_NOISE_PREFIX}${index}`, shape, "float32");
}

/** Linear → SiLU → Linear (diffusers' TimestepEmbedding): [N, Cin] → [N, dim]. */
function timeMlp(p: ParamScope, x: Tensor, dim: number): Tensor {
  return linear(p.sub("linear_2"), silu(linear(p.sub("linear_1"), x, dim)), dim); // [N, dim]
}

/**
 * The forward pass. sample [N, in_channels, H, W] float32 (H, W divisible by 2^(blocks − 1));
 * timesteps float32 [N] (or [1] / [], broadcast); classLabels: int64 [N] for a class table,
 * float32 [N] for class_embed_type "timestep", float32 [N, T] for "identity".
 * Returns [N, out_channels, H, W].
 */
export function unet2d(
  p: ParamScope,
  cfg: UNet2DConfig,
  sample: Tensor,
  timesteps: Tensor,
  classLabels?: Tensor,
  opts: UNetForwardOptions = {},
): Tensor {
  const [n, cin, hgt, wid] = sample.shape as [number, number, number, number];
  if (sample.rank !== 4 || cin !== cfg.inChannels) {
    throw new Error(`unet2d: sample must be [N, ${cfg.inChannels}, H, W], got [${sample.shape.join(", ")}]`);
  }
  const f = 2 ** downsamplingSteps(cfg);
  if (hgt % f !== 0 || wid % f !== 0) {
    throw new Error(`unet2d: height and width must be multiples of ${f} (2^(blocks − 1)), got ${hgt}×${wid}`);
  }
  const chans = cfg.blockOutChannels;
  const c0 = chans[0]!;
  const tdim = timeEmbedDim(cfg);
  const tproj = { flipSinToCos: cfg.flipSinToCos, freqShift: cfg.freqShift };
  let x = cfg.centerInputSample ? o.sub(o.mul(sample, 2), 1) : sample;

  // Time (and class) embedding.
  const t = o.expand(o.reshape(o.cast(timesteps, "float32"), [-1]), [n]); // [N]
  let temb = timeMlp(p.sub("time_embedding"), timestepEmbedding(t, c0, tproj), tdim); // [N, T]
  const cls = classConditioning(cfg);
  if (cls !== "none" && !classLabels) {
    throw new Error(
      "unet2d: this config is class-conditional (num_class_embeds/class_embed_type); pass class labels",
    );
  }
  if (cls === "none" && classLabels) {
    throw new Error(
      "unet2d: class labels given, but the config has no class embedding (num_class_embeds is null)",
    );
  }
  if (classLabels && cls === "table") {
    temb = o.add(temb, embedding(p.sub("class_embedding"), classLabels, cfg.numClassEmbeds!, tdim)); // [N, T]
  } else if (classLabels && cls === "timestep") {
    const sin = timestepEmbedding(o.reshape(classLabels, [-1]), c0, tproj); // [N, C0]
    temb = o.add(temb, timeMlp(p.sub("class_embedding"), sin, tdim)); // [N, T]
  } else if (classLabels && cls === "identity") {
    temb = o.add(temb, o.cast(classLabels, "float32")); // [N, T]
  }

  const ctx: BlockContext = {
    tembAct: silu(temb), // [N, T]
    groups: cfg.normNumGroups,
    eps: cfg.normEps,
    timeShift: cfg.resnetTimeScaleShift,
    dropout: dropoutFn(cfg.dropout, opts.dropoutNoise),
  };
  const attn = (channels: number, groups: number | null): AttentionBlockOptions => ({
    headDim: cfg.attentionHeadDim ?? channels,
    groups,
    eps: cfg.normEps,
  });

  x = conv2d(p.sub("conv_in"), x, c0, 3, { padding: 1 }); // [N, C0, H, W]
  const skips: Tensor[] = [x];
  const last = chans.length - 1;
  cfg.downBlockTypes.forEach((type, i) => {
    const cout = chans[i]!;
    const isAttn = type === "AttnDownBlock2D";
    const r = downBlock2D(p.sub("down_blocks").sub(i), x, ctx, {
      cout,
      layers: cfg.layersPerBlock,
      attention: isAttn ? spatialAttention(attn(cout, cfg.normNumGroups)) : null,
      // diffusers: DownBlock2D always downsamples with a conv; downsample_type is AttnDownBlock2D's.
      downsample: i === last ? null : isAttn ? cfg.downsampleType : "conv",
      padding: cfg.downsamplePadding,
    });
    x = r.h; // [N, C_i, H/2^(i+1), W/2^(i+1)] (the last block keeps its size)
    skips.push(...r.skips);
  });

  if (cfg.midBlockType !== null) {
    // diffusers: the mid attention's norm uses attn_norm_num_groups, else norm_num_groups with the
    // "default" time shift, else no norm at all.
    const groups =
      cfg.attnNormNumGroups ?? (cfg.resnetTimeScaleShift === "default" ? cfg.normNumGroups : null);
    const a = cfg.addAttention ? attn(chans[last]!, groups) : null;
    x = midBlock2D(p.sub("mid_block"), x, ctx, a, cfg.midBlockScaleFactor); // [N, C_last, h, w]
  }

  cfg.upBlockTypes.forEach((type, i) => {
    const cout = chans[last - i]!;
    const layers = cfg.layersPerBlock + 1;
    const isAttn = type === "AttnUpBlock2D";
    x = upBlock2D(p.sub("up_blocks").sub(i), x, skips.splice(skips.length - layers, layers), ctx, {
      cout,
      layers,
      attention: isAttn ? spatialAttention(attn(cout, cfg.normNumGroups)) : null,
      upsample: i === last ? null : isAttn ? cfg.upsampleType : "conv",
    }); // [N, C_(last−i), ·2, ·2] (the last block keeps its size)
  });

  x = silu(groupNorm(p.sub("conv_norm_out"), x, cfg.normNumGroups, cfg.normEps)); // [N, C0, H, W]
  return conv2d(p.sub("conv_out"), x, cfg.outChannels, 3, { padding: 1 }); // [N, out_channels, H, W]
}

/** Dropout with probability `prob` from `noise` (see `UNetForwardOptions`); the identity without noise. */
export function dropoutFn(prob: number, noise: UNetForwardOptions["dropoutNoise"]): (x: Tensor) => Tensor {
  if (prob === 0 || !noise) return (x) => x;
  let index = 0;
  return (x) => {
    const u = noise(x.shape, index++); // U[0, 1), same shape as x
    return o.where(o.less(u, prob), 0, o.mul(x, 1 / (1 - prob)));
  };
}

/**
 * The forward pass for composing into other graphs (a training step): `config` may be a diffusers
 * config.json object or a typed config. Same as `unet2d` otherwise.
 */
export function unetForward(
  scope: ParamScope,
  config: UNet2DConfig | DiffusersConfig,
  x: Tensor,
  t: Tensor,
  labels?: Tensor,
  opts: UNetForwardOptions = {},
): Tensor {
  const cfg = isTyped(config) ? config : resolveUNetConfig(config);
  return unet2d(scope, cfg, x, t, labels, opts);
}

function isTyped(c: UNet2DConfig | DiffusersConfig): c is UNet2DConfig {
  return Array.isArray((c as Partial<UNet2DConfig>).blockOutChannels) && "normNumGroups" in c;
}

/** The example class-label input for a config (what `unet2d` expects), for tracing. */
export function classLabelSpec(
  cfg: UNet2DConfig,
  batch: number,
): { shape: number[]; dtype: "int64" | "float32" } | null {
  switch (classConditioning(cfg)) {
    case "none":
      return null;
    case "table":
      return { shape: [batch], dtype: "int64" };
    case "timestep":
      return { shape: [batch], dtype: "float32" };
    case "identity":
      return { shape: [batch, timeEmbedDim(cfg)], dtype: "float32" };
  }
}

/** Every parameter of the model (name, shape, PyTorch-default init), in diffusers' state-dict order. */
export function unetParamSpecs(cfg: UNet2DConfig): ParamSpec[] {
  const graph = new Graph();
  const side = 2 ** downsamplingSteps(cfg);
  const sample = graph.input("sample", [1, cfg.inChannels, side, side]);
  const t = graph.input("timestep", [1]);
  const ls = classLabelSpec(cfg, 1);
  const labels = ls ? graph.input("class_labels", ls.shape, ls.dtype) : undefined;
  const scope = ParamScope.root(graph);
  unet2d(scope, cfg, sample, t, labels);
  return sortStateDict(scope.specs);
}

/** Fresh parameters for a config (PyTorch's default initialization; each from its own stream of `rng`). */
export function initUNet(cfg: UNet2DConfig, rng: Rng): Params {
  return initParams(unetParamSpecs(cfg), rng);
}

/**
 * diffusers registers modules in an order that differs from the order a forward pass uses them
 * (up_blocks before mid_block; attentions before resnets in a block). This rank table restores
 * it; names compare segment by segment, numbers numerically. It serves UNet2DConditionModel too:
 * its Transformer2DModel (norm, proj_in, transformer_blocks, proj_out), each block's norm1, attn1,
 * norm2, attn2, norm3, ff (interleaved with a resnet's names, which never share a scope with them)
 * and the time embedding's cond_proj (registered between linear_1 and linear_2).
 */
const RANK: Readonly<Record<string, number>> = Object.fromEntries(
  [
    ["conv_in", "time_proj", "time_embedding", "class_embedding", "down_blocks", "up_blocks", "mid_block"],
    ["conv_norm_out", "conv_out", "attentions", "resnets", "downsamplers", "upsamplers"],
    ["norm", "proj_in", "transformer_blocks", "proj_out"],
    ["norm1", "attn1", "conv1", "time_emb_proj", "norm2", "attn2", "conv2", "conv_shortcut", "norm3", "ff"],
    ["conv", "group_norm", "to_q", "to_k", "to_v", "to_out", "net", "proj"],
    ["linear_1", "cond_proj", "linear_2", "weight", "bias"],
  ]
    .flat()
    .map((name, i) => [name, i]),
);

function compareNames(a: string, b: string): number {
  const sa = a.split(".");
  const sb = b.split(".");
  for (let i = 0; i < Math.min(sa.length, sb.length); i++) {
    const x = sa[i]!;
    const y = sb[i]!;
    if (x === y) continue;
    const nx = /^\d+$/.test(x) ? Number(x) : (RANK[x] ?? Number.POSITIVE_INFINITY);
    const ny = /^\d+$/.test(y) ? Number(y) : (RANK[y] ?? Number.POSITIVE_INFINITY);
    return nx - ny || (x < y ? -1 : 1);
  }
  return sa.length - sb.length;
}

/** Specs sorted into diffusers' state-dict order. */
export function sortStateDict<T extends { readonly name: string }>(specs: readonly T[]): T[] {
  return [...specs].sort((a, b) => compareNames(a.name, b.name));
}
