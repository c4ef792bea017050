/**
 * `UNet2DConditionModel`: diffusers' text-conditioned U-Net (Stable Diffusion 1.x/2.x) on the diffuse
 * engine, with the shared model machinery of ../denoiser-model.ts (a traced graph per input shape —
 * here also per text length and per set of optional inputs — and diffusers folders both ways).
 *
 *   const unet = await UNet2DConditionModel.fromPretrained(dir);       // or: await loadModel(dir)
 *   const eps = await unet.forward(latents, 999, { encoderHiddenStates });
 *   const ctl = await unet.forward(latents, 999, { encoderHiddenStates, downBlockAdditionalResiduals, midBlockAdditionalResidual });
 */
import { formatShape, HostTensor } from "../../tensor/host.ts";
import { DenoiserModel, type TensorLike, type Timesteps } from "../denoiser-model.ts";
import type { UNet2DConditionConfig } from "./config.ts";
import { DOWN_RESIDUAL_PREFIX, MID_RESIDUAL, TIMESTEP_COND, textEmbedsFeed, UNET2D_COND_DEF } from "./def.ts";

export interface UNetCondCallOptions {
  /** Text embeddings [N, L, cross_attention_dim] (e.g. CLIP's last hidden state). */
  readonly encoderHiddenStates: TensorLike;
  /** ControlNet: one residual per skip connection (conv_in, each resnet, each downsampler), in order. */
  readonly downBlockAdditionalResiduals?: readonly TensorLike[];
  /** ControlNet: the residual added to the mid block's output [N, C_last, h, w]. */
  readonly midBlockAdditionalResidual?: TensorLike;
  /** LCM's guidance embedding [N, time_cond_proj_dim] (needs time_cond_proj_dim in the config). */
  readonly timestepCond?: TensorLike;
}

const NAME = "UNet2DConditionModel.forward";

/** A float32 feed, checked for its dtype. */
function floatFeed(what: string, t: TensorLike): HostTensor<"float32"> {
  const h = HostTensor.from<"float32">(t);
  if (h.dtype !== "float32")
    throw new Error(`${NAME}: ${what} must be float32, got ${h.dtype} ${formatShape(h.shape)}`);
  return h;
}

export class UNet2DConditionModel extends DenoiserModel<UNet2DConditionConfig> {
  /** The registry entry the static constructors (fromConfig, fromParams, fromPretrained) build from. */
  static readonly def = UNET2D_COND_DEF;

  /**
   * Runs the network: sample [N, in_channels, H, W] (H, W multiples of 2^(blocks − 1)); timestep a
   * number, N numbers or a tensor of 1 or N values; the text embeddings [N, L, cross_attention_dim];
   * optional ControlNet residuals (both or neither, added as diffusers does: each to its skip, the
   * last to the mid block's output) and timestep_cond. Returns [N, out_channels, H, W].
   */
  async forward(
    sample: TensorLike,
    timestep: Timesteps,
    opts: UNetCondCallOptions,
  ): Promise<HostTensor<"float32">> {
    const n = sample.shape[0] ?? 0;
    const c = this.typedConfig;
    const embeds =
      opts?.encoderHiddenStates === undefined ? undefined : HostTensor.from(opts.encoderHiddenStates);
    const feeds: Record<string, HostTensor> = { encoder_hidden_states: textEmbedsFeed(c, embeds, n) };
    const down = opts.downBlockAdditionalResiduals;
    const mid = opts.midBlockAdditionalResidual;
    if ((down === undefined) !== (mid === undefined)) {
      throw new Error(
        `${NAME}: ControlNet residuals come in pairs: pass downBlockAdditionalResiduals and midBlockAdditionalResidual together`,
      );
    }
    down?.forEach((r, i) => {
      feeds[`${DOWN_RESIDUAL_PREFIX}${i}`] = floatFeed(`downBlockAdditionalResiduals[${i}]`, r);
    });
    if (mid !== undefined) feeds[MID_RESIDUAL] = floatFeed("midBlockAdditionalResidual", mid);
    if (opts.timestepCond !== undefined) {
      if (c.timeCondProjDim === null) {
        throw new Error(
          `${NAME}: timestepCond given, but this model has no time_cond_proj_dim (an LCM U-Net has one)`,
        );
      }
      feeds[TIMESTEP_COND] = floatFeed("timestepCond", opts.timestepCond);
    }
    return this.run(sample, timestep, feeds);
  }
}
