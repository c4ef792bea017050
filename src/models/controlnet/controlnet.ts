/**
 * The ControlNetModel forward pass (Zhang, Rao & Agrawala 2023; diffusers' `ControlNetModel.forward`)
 * as a function over a parameter scope whose names are diffusers' state-dict names:
 *
 *   c  = E(control image)                   conditioning embedding: conv_in → SiLU → per step a 3×3 conv
 *                                           and a stride-2 3×3 conv, each → SiLU → conv_out (zero-init)
 *   x  = conv_in(sample) + c                → the U-Net's own down blocks and mid block (a trainable
 *                                           copy of its encoder: ../unet-cond/unet-cond.ts), skips kept
 *   rᵢ = Zᵢ(skipᵢ) · sᵢ                     one zero-initialised 1×1 conv per skip (controlnet_down_blocks.i)
 *   r_mid = Z_mid(mid) · s_mid              and one on the mid block's output (controlnet_mid_block)
 *
 * The scale s is conditioning_scale; in guess mode (unless global_pool_conditions) residual i of K
 * down residuals is scaled by conditioning_scale · 10^(−1 + i/K) (torch.logspace(−1, 0, K + 1): 0.1
 * for the shallowest skip up to 1 for the mid block). With global_pool_conditions every residual is
 * averaged over height and width. Because every Z starts at zero, a ControlNet fresh from a U-Net
 * adds nothing to it: training starts from the U-Net's own behaviour (the paper's §3.1).
 *
 * `unet2dConditionWithControlNet` runs a ControlNet and a UNet2DConditionModel in one graph (its
 * residuals added to the U-Net's skips and mid block): a sampling step or a ControlNet train step in
 * one ONNX session.
 */
import { silu } from "../../nn/activations.ts";
import { conv2d } from "../../nn/linear.ts";
import { formatShape } from "../../tensor/host.ts";
import * as o from "../../tensor/ops.ts";
import { init, initParams, ParamScope, type ParamSpec, type Params } from "../../tensor/params.ts";
import type { Rng } from "../../tensor/rng.ts";
import { Graph, type Tensor } from "../../tensor/symbolic.ts";
import type { UNetForwardOptions } from "../unet/unet.ts";
import { sortStateDict } from "../unet/unet.ts";
import { condDownsamplingSteps, skipChannels, type UNet2DConditionConfig } from "../unet-cond/config.ts";
import {
  condBlocks,
  condDownBlocks,
  condMidBlock,
  type UNetCondInputs,
  unet2dCondition,
} from "../unet-cond/unet-cond.ts";
import { type ControlNetConfig, controlImageFactor, controlNetUNetConfig } from "./config.ts";

/** The inputs of the forward pass besides sample and timestep (diffusers' keyword arguments). */
export interface ControlNetInputs {
  /** Text tokens [N, L, cross_attention_dim]. */
  readonly encoderHiddenStates: Tensor;
  /** The control image [N, conditioning_channels, H·f, W·f], f = 2^(len(conditioning_embedding_out_channels) − 1). */
  readonly controlnetCond: Tensor;
  /**
   * conditioning_scale: a number, or a graph tensor of one element or of one per sample [N, 1, 1, 1]
   * (one graph for every scale; guess mode's unconditional half gets 0). Default 1.
   */
  readonly conditioningScale?: number | Tensor;
  /** diffusers' guess_mode: the residuals scaled from 0.1 (shallowest) to 1 (mid block). */
  readonly guessMode?: boolean;
}

/** The residuals, scaled as diffusers returns them: one per U-Net skip, and the mid block's. */
export interface ControlNetResiduals {
  readonly downBlockResSamples: Tensor[];
  readonly midBlockResSample: Tensor;
}

/** The scope name of a ControlNet's parameters beside a U-Net's in one graph ("controlnet.conv_in.weight"). */
export const CONTROLNET_SCOPE = "controlnet";

/** A ControlNet's weights under CONTROLNET_SCOPE, to sit beside a U-Net's in one frozen scope ("controlnet.conv_in.weight"). */
export function inControlNetScope(params: Params): Params {
  return new Map([...params].map(([k, v]) => [`${CONTROLNET_SCOPE}.${k}`, v]));
}

/** The per-residual factors of guess mode: torch.logspace(−1, 0, k + 1) in float32 (k down residuals, then mid). */
export function guessModeScales(k: number): number[] {
  if (k < 1) throw new Error(`guessModeScales: a ControlNet has at least one down residual, got ${k}`);
  return Array.from({ length: k + 1 }, (_, i) => Math.fround(10 ** (-1 + i / k)));
}

/** The conditioning embedding E: control image [N, Cc, H·f, W·f] → [N, C0, H, W] (conv_out zero-initialised). */
export function controlNetCondEmbedding(p: ParamScope, cfg: ControlNetConfig, cond: Tensor): Tensor {
  const ch = cfg.conditioningEmbeddingOutChannels;
  let h = silu(conv2d(p.sub("conv_in"), cond, ch[0]!, 3, { padding: 1 })); // [N, ch0, H·f, W·f]
  for (let i = 0; i + 1 < ch.length; i++) {
    h = silu(conv2d(p.sub("blocks").sub(2 * i), h, ch[i]!, 3, { padding: 1 })); // same size
    h = silu(conv2d(p.sub("blocks").sub(2 * i + 1), h, ch[i + 1]!, 3, { padding: 1, stride: 2 })); // [N, ch_{i+1}, ·½, ·½]
  }
  const zero = { weight: init.zeros(), bias: init.zeros() };
  return conv2d(p.sub("conv_out"), h, cfg.blockOutChannels[0]!, 3, { padding: 1, init: zero }); // [N, C0, H, W]
}

/** Checks the shapes the forward pass is given; messages name the expected shape and the fix. */
function checkInputs(cfg: ControlNetConfig, sample: Tensor, inputs: ControlNetInputs): void {
  const name = "controlNetForward";
  const [n, cin, hgt, wid] = sample.shape as [number, number, number, number];
  if (sample.rank !== 4 || cin !== cfg.inChannels) {
    throw new Error(`${name}: sample must be [N, ${cfg.inChannels}, H, W], got ${formatShape(sample.shape)}`);
  }
  const m = 2 ** (cfg.blockOutChannels.length - 1);
  if (hgt % m !== 0 || wid % m !== 0) {
    throw new Error(
      `${name}: height and width must be multiples of ${m} (2^(blocks − 1)), got ${hgt}×${wid}`,
    );
  }
  const e = inputs.encoderHiddenStates;
  if (e.rank !== 3 || e.shape[0] !== n || e.shape[2] !== cfg.crossAttentionDim) {
    throw new Error(
      `${name}: encoder_hidden_states must be [${n}, L, ${cfg.crossAttentionDim}] (cross_attention_dim ${cfg.crossAttentionDim}), got ${formatShape(e.shape)}`,
    );
  }
  const c = inputs.controlnetCond;
  const f = controlImageFactor(cfg);
  const want = [n, cfg.conditioningChannels, hgt * f, wid * f];
  if (formatShape(c.shape) !== formatShape(want)) {
    throw new Error(
      `${name}: controlnet_cond must be ${formatShape(want)} (${cfg.conditioningChannels} channels, ${f}× the ${hgt}×${wid} sample: conditioning_embedding_out_channels has ${cfg.conditioningEmbeddingOutChannels.length} entries), got ${formatShape(c.shape)}`,
    );
  }
  const s = inputs.conditioningScale;
  const perSample = (t: Tensor) => t.rank === 4 && t.shape[0] === n && t.shape.slice(1).every((d) => d === 1);
  const bad =
    typeof s === "number"
      ? !Number.isFinite(s)
      : s
        ? !(s.shape.every((d) => d === 1) || perSample(s))
        : false;
  if (bad) {
    throw new Error(
      `${name}: conditioning_scale must be a finite number, a one-element tensor or one per sample [${n}, 1, 1, 1], got ${typeof s === "number" ? s : formatShape(s!.shape)}`,
    );
  }
}

/**
 * The forward pass. sample [N, in_channels, H, W] (H, W multiples of 2^(blocks − 1)); timesteps
 * float32 [N] (or [1] / [], broadcast); the text, the control image and the scaling as `inputs`.
 * Returns the residuals already scaled: down [N, C_skip, ·, ·] per U-Net skip and mid [N, C_last, h, w]
 * (each [N, C, 1, 1] with global_pool_conditions).
 */
export function controlNetForward(
  p: ParamScope,
  cfg: ControlNetConfig,
  sample: Tensor,
  timesteps: Tensor,
  inputs: ControlNetInputs,
  opts: UNetForwardOptions = {},
): ControlNetResiduals {
  checkInputs(cfg, sample, inputs);
  const ucfg = controlNetUNetConfig(cfg);
  const blocks = condBlocks(p, ucfg, sample.shape[0]!, timesteps, inputs, opts);
  let cond = inputs.controlnetCond; // [N, Cc, H·f, W·f]
  if (cfg.controlnetConditioningChannelOrder === "bgr")
    cond = o.concat(o.split(cond, 1, cond.shape[1]!).reverse(), 1);

  const x = conv2d(p.sub("conv_in"), sample, cfg.blockOutChannels[0]!, 3, { padding: 1 }); // [N, C0, H, W]
  const embedded = controlNetCondEmbedding(p.sub("controlnet_cond_embedding"), cfg, cond); // [N, C0, H, W]
  const down = condDownBlocks(p, ucfg, o.add(x, embedded), blocks); // skips: conv_in's, each resnet's, each downsampler's
  const mid = condMidBlock(p, ucfg, down.h, blocks); // [N, C_last, h, w]

  const zero = { weight: init.zeros(), bias: init.zeros() };
  const zeroConv = (scope: ParamScope, h: Tensor) => conv2d(scope, h, h.shape[1]!, 1, { init: zero }); // same shape
  let res = down.skips.map((s, i) => zeroConv(p.sub("controlnet_down_blocks").sub(i), s));
  let midRes = zeroConv(p.sub("controlnet_mid_block"), mid);

  const scale = inputs.conditioningScale ?? 1;
  const times = (t: Tensor, f: number) =>
    typeof scale === "number" ? o.mul(t, Math.fround(f * scale)) : o.mul(t, o.mul(scale, f));
  if (inputs.guessMode && !cfg.globalPoolConditions) {
    const s = guessModeScales(res.length);
    res = res.map((r, i) => times(r, s[i]!));
    midRes = times(midRes, s[res.length]!);
  } else {
    res = res.map((r) => times(r, 1));
    midRes = times(midRes, 1);
  }
  if (cfg.globalPoolConditions) {
    res = res.map((r) => o.mean(r, [2, 3], true)); // [N, C, 1, 1]
    midRes = o.mean(midRes, [2, 3], true);
  }
  return { downBlockResSamples: res, midBlockResSample: midRes };
}

/** Checks that a ControlNet's residuals fit a U-Net's skips (channels, depth, text width). */
export function checkControlNetFits(unet: UNet2DConditionConfig, cn: ControlNetConfig): void {
  const mine = skipChannels(controlNetUNetConfig(cn)).map((s) => s.channels);
  const theirs = skipChannels(unet).map((s) => s.channels);
  if (mine.join() !== theirs.join() || cn.inChannels !== unet.inChannels) {
    throw new Error(
      `this ControlNet (in_channels ${cn.inChannels}, skips of ${mine.join(", ")} channels) does not fit the U-Net (in_channels ${unet.inChannels}, skips of ${theirs.join(", ")}); use a ControlNet made from this U-Net (ControlNetModel.fromUnet)`,
    );
  }
  if (cn.crossAttentionDim !== unet.crossAttentionDim) {
    throw new Error(
      `this ControlNet reads text of width ${cn.crossAttentionDim}, the U-Net ${unet.crossAttentionDim} (cross_attention_dim): they need the same text encoder`,
    );
  }
}

/**
 * A UNet2DConditionModel steered by a ControlNet, in one graph: the ControlNet's residuals (scaled)
 * join the U-Net's skips and mid block. The scopes are separate (the ControlNet's is usually
 * `root.sub(CONTROLNET_SCOPE)`, so a train step can freeze the U-Net by name). Returns [N, out, H, W].
 */
export function unet2dConditionWithControlNet(
  unetScope: ParamScope,
  unetCfg: UNet2DConditionConfig,
  controlScope: ParamScope,
  controlCfg: ControlNetConfig,
  sample: Tensor,
  timesteps: Tensor,
  inputs: ControlNetInputs & Pick<UNetCondInputs, "timestepCond">,
  opts: UNetForwardOptions = {},
): Tensor {
  checkControlNetFits(unetCfg, controlCfg);
  const r = controlNetForward(controlScope, controlCfg, sample, timesteps, inputs, opts);
  // pooled residuals ([N, C, 1, 1]) broadcast over their skip, as PyTorch's addition does
  const [n, , hgt, wid] = sample.shape as [number, number, number, number];
  const full = (t: Tensor, scale: number) =>
    o.expand(t, [n, t.shape[1]!, hgt / 2 ** scale, wid / 2 ** scale]);
  const skips = skipChannels(unetCfg);
  const steps = condDownsamplingSteps(unetCfg);
  return unet2dCondition(
    unetScope,
    unetCfg,
    sample,
    timesteps,
    {
      encoderHiddenStates: inputs.encoderHiddenStates,
      downBlockAdditionalResiduals: r.downBlockResSamples.map((t, i) => full(t, skips[i]!.scale)),
      midBlockAdditionalResidual: full(r.midBlockResSample, steps),
      ...(inputs.timestepCond ? { timestepCond: inputs.timestepCond } : {}),
    },
    opts,
  );
}

/** diffusers registers a ControlNet's modules in this order (the encoder's insides as the U-Net's). */
const TOP = [
  "conv_in",
  "time_embedding",
  "controlnet_cond_embedding",
  "down_blocks",
  "controlnet_down_blocks",
  "controlnet_mid_block",
  "mid_block",
];

/** Every parameter (name, shape, init: PyTorch's default, zeros for the zero convolutions), in diffusers' state-dict order. */
export function controlNetParamSpecs(cfg: ControlNetConfig): ParamSpec[] {
  const graph = new Graph();
  const side = 2 ** (cfg.blockOutChannels.length - 1);
  const f = controlImageFactor(cfg);
  const sample = graph.input("sample", [1, cfg.inChannels, side, side]);
  const t = graph.input("timestep", [1]);
  const encoderHiddenStates = graph.input("encoder_hidden_states", [1, 1, cfg.crossAttentionDim]);
  const controlnetCond = graph.input("controlnet_cond", [1, cfg.conditioningChannels, side * f, side * f]);
  const scope = ParamScope.root(graph);
  controlNetForward(scope, cfg, sample, t, { encoderHiddenStates, controlnetCond });
  const specs = scope.specs;
  const groups = TOP.map((top) => specs.filter((s) => s.name.split(".")[0] === top));
  if (groups.reduce((a, g) => a + g.length, 0) !== specs.length) {
    throw new Error("controlNetParamSpecs: a parameter outside diffusers' ControlNetModel modules");
  }
  // the conditioning embedding's trace order (conv_in, blocks.i, conv_out) is diffusers' order
  return groups.flatMap((g, i) => (TOP[i] === "controlnet_cond_embedding" ? g : sortStateDict(g)));
}

/** Fresh parameters for a config (each from its own stream of `rng`; the zero convolutions zero). */
export function initControlNet(cfg: ControlNetConfig, rng: Rng): Params {
  return initParams(controlNetParamSpecs(cfg), rng);
}
