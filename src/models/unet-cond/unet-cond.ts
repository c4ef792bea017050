/**
 * The UNet2DConditionModel forward pass (the latent U-Net of Stable Diffusion, Rombach et al. 2022;
 * diffusers' `UNet2DConditionModel.forward`) as a function over a parameter scope:
 * `unet2dCondition(scope, cfg, sample, timesteps, { encoderHiddenStates, … })`.
 *
 *   t → sinusoidal(C0) (+ cond_proj(timestep_cond)) → time_embedding (Linear → SiLU → Linear) = temb
 *   x → conv_in → down blocks (resnet [→ Transformer2DModel with cross-attention], skips kept)
 *     → (+ ControlNet residuals on the skips) → mid block (+ its ControlNet residual)
 *     → up blocks (skips used) → GN → SiLU → conv_out
 *
 * The resnets, down/upsamplers and block loops are UNet2DModel's (../unet/blocks.ts); the attention
 * after each resnet is the Transformer2DModel of transformer.ts. Parameter names are diffusers'
 * state-dict names; `unetCondParamSpecs` lists them in diffusers' state-dict order with PyTorch's
 * default initialization, so a model built from a config trains from scratch as diffusers' would.
 */
import { gelu, silu } from "../../nn/activations.ts";
import { timestepEmbedding } from "../../nn/embedding.ts";
import { conv2d, linear } from "../../nn/linear.ts";
import { groupNorm } from "../../nn/norm.ts";
import { formatShape } from "../../tensor/host.ts";
import * as o from "../../tensor/ops.ts";
import { initParams, ParamScope, type ParamSpec, type Params } from "../../tensor/params.ts";
import type { Rng } from "../../tensor/rng.ts";
import { Graph, type Tensor } from "../../tensor/symbolic.ts";
import {
  type BlockAttention,
  type BlockContext,
  downBlock2D,
  resnetBlock2D,
  upBlock2D,
} from "../unet/blocks.ts";
import { dropoutFn, sortStateDict, type UNetForwardOptions } from "../unet/unet.ts";
import {
  type Activation,
  attentionPlan,
  blockValue,
  condDownsamplingSteps,
  condTimeEmbedDim,
  skipChannels,
  type UNet2DConditionConfig,
} from "./config.ts";
import { transformer2D } from "./transformer.ts";

/** The conditioning inputs of the forward pass (diffusers' keyword arguments). */
export interface UNetCondInputs {
  /** Text tokens [N, L, cross_attention_dim]. */
  readonly encoderHiddenStates: Tensor;
  /** ControlNet: one residual per skip connection, added to it (with `midBlockAdditionalResidual`). */
  readonly downBlockAdditionalResiduals?: readonly Tensor[];
  /** ControlNet: added to the mid block's output [N, C_last, h, w]. */
  readonly midBlockAdditionalResidual?: Tensor;
  /** LCM's guidance embedding [N, time_cond_proj_dim], projected and added to the timestep features. */
  readonly timestepCond?: Tensor;
}

const act = (a: Activation, x: Tensor): Tensor => (a === "gelu" ? gelu(x) : silu(x));

/** The time embedding temb [N, T]: sinusoidal features (+ cond_proj(timestep_cond)) → Linear → SiLU → Linear. */
function timeEmbedding(p: ParamScope, cfg: UNet2DConditionConfig, t: Tensor, cond?: Tensor): Tensor {
  const c0 = cfg.blockOutChannels[0]!;
  const tdim = condTimeEmbedDim(cfg);
  let feats = timestepEmbedding(t, c0, { flipSinToCos: cfg.flipSinToCos, freqShift: cfg.freqShift }); // [N, C0]
  if (cond) {
    if (cfg.timeCondProjDim === null) {
      throw new Error("unet2dCondition: timestep_cond given, but the config has no time_cond_proj_dim");
    }
    feats = o.add(feats, linear(p.sub("cond_proj"), cond, c0, { bias: false })); // [N, C0]
  }
  let emb = linear(p.sub("linear_2"), silu(linear(p.sub("linear_1"), feats, tdim)), tdim); // [N, T]
  if (cfg.timestepPostAct) emb = act(cfg.timestepPostAct, emb);
  return cfg.timeEmbeddingActFn ? act(cfg.timeEmbeddingActFn, emb) : emb;
}

/** Checks the shapes the forward pass is given (sample, text tokens, residuals, timestep_cond). */
function checkInputs(cfg: UNet2DConditionConfig, sample: Tensor, inputs: UNetCondInputs): void {
  const [n, cin, hgt, wid] = sample.shape as [number, number, number, number];
  if (sample.rank !== 4 || cin !== cfg.inChannels) {
    throw new Error(
      `unet2dCondition: sample must be [N, ${cfg.inChannels}, H, W], got ${formatShape(sample.shape)}`,
    );
  }
  const f = 2 ** condDownsamplingSteps(cfg);
  if (hgt % f !== 0 || wid % f !== 0) {
    throw new Error(
      `unet2dCondition: height and width must be multiples of ${f} (2^(blocks − 1)), got ${hgt}×${wid}`,
    );
  }
  const e = inputs.encoderHiddenStates;
  if (e.rank !== 3 || e.shape[0] !== n || e.shape[2] !== cfg.crossAttentionDim) {
    throw new Error(
      `unet2dCondition: encoder_hidden_states must be [${n}, L, ${cfg.crossAttentionDim}] (cross_attention_dim ${cfg.crossAttentionDim}), got ${formatShape(e.shape)}`,
    );
  }
  const down = inputs.downBlockAdditionalResiduals;
  const mid = inputs.midBlockAdditionalResidual;
  if (!down !== !mid) {
    throw new Error(
      "unet2dCondition: ControlNet residuals come in pairs: pass down_block_additional_residuals and mid_block_additional_residual together",
    );
  }
  if (down) {
    const skips = skipChannels(cfg);
    const want = skips.map((s) => [n, s.channels, hgt / 2 ** s.scale, wid / 2 ** s.scale]);
    if (down.length !== skips.length) {
      throw new Error(
        `unet2dCondition: got ${down.length} down_block_additional_residuals; this U-Net has ${skips.length} skips`,
      );
    }
    down.forEach((r, i) => {
      if (formatShape(r.shape) !== formatShape(want[i]!)) {
        throw new Error(
          `unet2dCondition: down_block_additional_residuals[${i}] must be ${formatShape(want[i]!)}, got ${formatShape(r.shape)}`,
        );
      }
    });
    const last = cfg.blockOutChannels.length - 1;
    const midShape = [n, cfg.blockOutChannels[last]!, hgt / f, wid / f];
    if (formatShape(mid!.shape) !== formatShape(midShape)) {
      throw new Error(
        `unet2dCondition: mid_block_additional_residual must be ${formatShape(midShape)}, got ${formatShape(mid!.shape)}`,
      );
    }
  }
  const tc = inputs.timestepCond;
  if (tc && (tc.rank !== 2 || tc.shape[0] !== n || tc.shape[1] !== cfg.timeCondProjDim)) {
    throw new Error(
      `unet2dCondition: timestep_cond must be [${n}, ${cfg.timeCondProjDim ?? "time_cond_proj_dim"}], got ${formatShape(tc.shape)}`,
    );
  }
}

/** What the blocks of one forward pass share: the timestep embedding and the cross-attention to the text. */
export interface CondBlocks {
  readonly ctx: BlockContext;
  /** The Transformer2DModel after each resnet of down block i, up block i or the mid block. */
  readonly crossAttention: (where: "down" | "up" | "mid", i?: number) => BlockAttention;
}

/** The time embedding (temb, under `time_embedding`) and the cross-attention to the text, for a batch of n. */
export function condBlocks(
  p: ParamScope,
  cfg: UNet2DConditionConfig,
  n: number,
  timesteps: Tensor,
  inputs: Pick<UNetCondInputs, "encoderHiddenStates" | "timestepCond">,
  opts: UNetForwardOptions = {},
): CondBlocks {
  const context = inputs.encoderHiddenStates; // [N, L, cross_attention_dim]
  const t = o.expand(o.reshape(o.cast(timesteps, "float32"), [-1]), [n]); // [N]
  const temb = timeEmbedding(p.sub("time_embedding"), cfg, t, inputs.timestepCond); // [N, T]
  const dropout = dropoutFn(cfg.dropout, opts.dropoutNoise);
  const ctx: BlockContext = {
    tembAct: silu(temb), // [N, T]
    groups: cfg.normNumGroups,
    eps: cfg.normEps,
    timeShift: cfg.resnetTimeScaleShift,
    dropout,
  };
  const crossAttention = (where: "down" | "up" | "mid", i = 0): BlockAttention => {
    const plan = attentionPlan(cfg, where, i);
    return (scope, h) =>
      transformer2D(scope, h, {
        heads: plan.heads,
        layers: plan.layers,
        groups: cfg.normNumGroups,
        linearProjection: cfg.useLinearProjection,
        context,
        dropout,
      });
  };
  return { ctx, crossAttention };
}

/** conv_in's output [N, C0, H, W] through the down blocks: the last block's output and every skip (conv_in's first). */
export function condDownBlocks(
  p: ParamScope,
  cfg: UNet2DConditionConfig,
  x: Tensor,
  blocks: CondBlocks,
): { h: Tensor; skips: Tensor[] } {
  const chans = cfg.blockOutChannels;
  const last = chans.length - 1;
  const skips: Tensor[] = [x];
  cfg.downBlockTypes.forEach((type, i) => {
    const r = downBlock2D(p.sub("down_blocks").sub(i), x, blocks.ctx, {
      cout: chans[i]!,
      layers: blockValue(cfg.layersPerBlock, i),
      attention: type === "CrossAttnDownBlock2D" ? blocks.crossAttention("down", i) : null,
      downsample: i === last ? null : "conv",
      padding: cfg.downsamplePadding,
    });
    x = r.h; // [N, C_i, H/2^(i+1), W/2^(i+1)] (the last block keeps its size)
    skips.push(...r.skips);
  });
  return { h: x, skips };
}

/** The mid block over [N, C_last, h, w] (resnet [→ cross-attention → resnet]; none: the identity). */
export function condMidBlock(
  p: ParamScope,
  cfg: UNet2DConditionConfig,
  x: Tensor,
  blocks: CondBlocks,
): Tensor {
  const c = cfg.blockOutChannels[cfg.blockOutChannels.length - 1]!;
  const mid = p.sub("mid_block");
  const scale = cfg.midBlockScaleFactor;
  if (cfg.midBlockType !== null) {
    x = resnetBlock2D(mid.sub("resnets").sub(0), x, c, blocks.ctx, { scale }); // [N, C_last, h, w]
  }
  if (cfg.midBlockType === "UNetMidBlock2DCrossAttn") {
    x = blocks.crossAttention("mid")(mid.sub("attentions").sub(0), x);
    x = resnetBlock2D(mid.sub("resnets").sub(1), x, c, blocks.ctx, { scale });
  }
  return x;
}

/**
 * The forward pass. sample [N, in_channels, H, W] float32 (H, W multiples of 2^(blocks − 1));
 * timesteps float32 [N] (or [1] / [], broadcast); the text tokens and optional ControlNet residuals
 * and timestep_cond as `inputs`. Returns [N, out_channels, H, W].
 */
export function unet2dCondition(
  p: ParamScope,
  cfg: UNet2DConditionConfig,
  sample: Tensor,
  timesteps: Tensor,
  inputs: UNetCondInputs,
  opts: UNetForwardOptions = {},
): Tensor {
  checkInputs(cfg, sample, inputs);
  const chans = cfg.blockOutChannels;
  const last = chans.length - 1;
  const blocks = condBlocks(p, cfg, sample.shape[0]!, timesteps, inputs, opts);
  let x = cfg.centerInputSample ? o.sub(o.mul(sample, 2), 1) : sample;

  const kin = cfg.convInKernel;
  x = conv2d(p.sub("conv_in"), x, chans[0]!, kin, { padding: (kin - 1) / 2 }); // [N, C0, H, W]
  const down = condDownBlocks(p, cfg, x, blocks);
  let skips = down.skips;
  const residuals = inputs.downBlockAdditionalResiduals;
  if (residuals) skips = skips.map((s, i) => o.add(s, residuals[i]!)); // ControlNet: each skip + its residual

  x = condMidBlock(p, cfg, down.h, blocks); // [N, C_last, h, w]
  if (inputs.midBlockAdditionalResidual) x = o.add(x, inputs.midBlockAdditionalResidual);

  cfg.upBlockTypes.forEach((type, i) => {
    const layers = blockValue(cfg.layersPerBlock, last - i) + 1;
    x = upBlock2D(p.sub("up_blocks").sub(i), x, skips.splice(skips.length - layers, layers), blocks.ctx, {
      cout: chans[last - i]!,
      layers,
      attention: type === "CrossAttnUpBlock2D" ? blocks.crossAttention("up", i) : null,
      upsample: i === last ? null : "conv",
    }); // [N, C_(last−i), ·2, ·2] (the last block keeps its size)
  });

  x = silu(groupNorm(p.sub("conv_norm_out"), x, cfg.normNumGroups, cfg.normEps)); // [N, C0, H, W]
  const kout = cfg.convOutKernel;
  return conv2d(p.sub("conv_out"), x, cfg.outChannels, kout, { padding: (kout - 1) / 2 }); // [N, out, H, W]
}

/** Every parameter of the model (name, shape, PyTorch-default init), in diffusers' state-dict order. */
export function unetCondParamSpecs(cfg: UNet2DConditionConfig): ParamSpec[] {
  const graph = new Graph();
  const side = 2 ** condDownsamplingSteps(cfg);
  const sample = graph.input("sample", [1, cfg.inChannels, side, side]);
  const t = graph.input("timestep", [1]);
  const encoderHiddenStates = graph.input("encoder_hidden_states", [1, 1, cfg.crossAttentionDim]);
  const timestepCond =
    cfg.timeCondProjDim === null ? undefined : graph.input("timestep_cond", [1, cfg.timeCondProjDim]);
  const scope = ParamScope.root(graph);
  unet2dCondition(scope, cfg, sample, t, { encoderHiddenStates, ...(timestepCond ? { timestepCond } : {}) });
  return sortStateDict(scope.specs);
}

/** Fresh parameters for a config (PyTorch's default initialization; each from its own stream of `rng`). */
export function initUNetCond(cfg: UNet2DConditionConfig, rng: Rng): Params {
  return initParams(unetCondParamSpecs(cfg), rng);
}
