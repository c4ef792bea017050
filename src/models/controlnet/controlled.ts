/**
 * A UNet2DConditionModel steered by a ControlNetModel as ONE denoiser (the loop of diffusers'
 * StableDiffusionControlNetPipeline, Zhang, Rao & Agrawala 2023): each step runs one graph in which
 * the ControlNet reads the control image and its residuals join the U-Net's skips and mid block
 * (`unet2dConditionWithControlNet`). Samplers, guidance and training see an ordinary denoiser:
 *
 * - `controlledBound(unetCfg, controlCfg)`: the registry view (`BoundDenoiser`) of the pair — the
 *   U-Net's parameters under their own names, the ControlNet's under `controlnet.` (CONTROLNET_SCOPE),
 *   and two graph inputs besides the text: `controlnet_cond` [N, C, H·f, W·f] (the control image in
 *   [0, 1]) and `conditioning_scale` [N] (per sample: guess mode's unconditional half gets 0). A train
 *   step freezes the U-Net by name and trains the ControlNet alone.
 * - `ControlledDenoiser`: a loaded U-Net and ControlNet with their graphs (weights as constants, the
 *   U-Net's LoRA adapters included); `denoise(x, t, cond)` takes a text conditioning with a `control`
 *   image and runs the plain U-Net when there is none.
 */
import { type Conditioning, controlScales } from "../../diffusion/conditioning.ts";
import type { InputSpec } from "../../runtime/compile.ts";
import type { SessionOptions } from "../../runtime/options.ts";
import { formatShape, HostTensor } from "../../tensor/host.ts";
import * as o from "../../tensor/ops.ts";
import type { Params } from "../../tensor/params.ts";
import { type TensorLike, type Timesteps, timestepFeed } from "../denoiser-model.ts";
import { type BoundDenoiser, bindDenoiser } from "../registry.ts";
import type { UNet2DConditionConfig } from "../unet-cond/config.ts";
import { UNET2D_COND_DEF } from "../unet-cond/def.ts";
import type { UNet2DConditionModel } from "../unet-cond/model.ts";
import { WeightGraphs } from "../weight-graphs.ts";
import { type ControlNetConfig, controlImageFactor } from "./config.ts";
import {
  CONTROLNET_SCOPE,
  checkControlNetFits,
  controlNetParamSpecs,
  unet2dConditionWithControlNet,
} from "./controlnet.ts";
import type { ControlNetModel } from "./model.ts";

/** Graph input names of the control image and its per-sample scale. */
export const CONTROLNET_COND = "controlnet_cond";
export const CONDITIONING_SCALE = "conditioning_scale";

export interface ControlledOptions {
  /** diffusers' guess_mode (a property of the graph: residuals scaled 0.1 … 1 from shallow to deep). */
  readonly guessMode?: boolean;
  /** The latent side `condInputs` sizes the control image for (default: the U-Net's sample_size). */
  readonly latentSize?: number;
}

/** The control feeds of a conditioning: the image [n, C, H·f, W·f] (checked) and one scale per sample. */
function controlFeeds(cfg: ControlNetConfig, cond: Conditioning, n: number): Record<string, HostTensor> {
  const c = cond.control;
  if (!c) {
    throw new Error(
      "this U-Net is steered by a ControlNet: the conditioning needs a control image ({ control: { image, scale } })",
    );
  }
  const img = c.image;
  if (img.dtype !== "float32" || img.shape.length !== 4 || img.shape[0] !== n) {
    throw new Error(
      `the control image must be float32 [${n}, ${cfg.conditioningChannels}, H, W] (one per sample), got ${img.dtype} ${formatShape(img.shape)}`,
    );
  }
  if (img.shape[1] !== cfg.conditioningChannels) {
    throw new Error(
      `this ControlNet takes ${cfg.conditioningChannels}-channel control images (conditioning_channels), got ${formatShape(img.shape)}`,
    );
  }
  const scales = controlScales(c, n);
  const bad = scales.find((s) => !Number.isFinite(s));
  if (bad !== undefined) throw new Error(`the control scale must be a finite number, got ${bad}`);
  return { [CONTROLNET_COND]: img, [CONDITIONING_SCALE]: new HostTensor(Float32Array.from(scales), [n]) };
}

/**
 * The pair as one registry denoiser: the U-Net's geometry and conditioning; parameters the U-Net's
 * plus the ControlNet's under `controlnet.`; inputs the text, `controlnet_cond` and `conditioning_scale`.
 */
export function controlledBound(
  unetCfg: UNet2DConditionConfig,
  controlCfg: ControlNetConfig,
  opts: ControlledOptions = {},
): BoundDenoiser {
  checkControlNetFits(unetCfg, controlCfg);
  const base = bindDenoiser(UNET2D_COND_DEF, unetCfg);
  const f = controlImageFactor(controlCfg);
  const guessMode = opts.guessMode ?? false;
  return {
    ...base,
    paramSpecs: () => [
      ...base.paramSpecs(),
      ...controlNetParamSpecs(controlCfg).map((s) => ({ ...s, name: `${CONTROLNET_SCOPE}.${s.name}` })),
    ],
    condInputs: (n, sizes): Record<string, InputSpec> => {
      const side = opts.latentSize ?? base.geometry.sampleSize;
      if (side === null)
        throw new Error(
          "controlledBound: the U-Net has no sample_size; pass latentSize to size the control image",
        );
      return {
        ...base.condInputs(n, sizes),
        [CONTROLNET_COND]: { shape: [n, controlCfg.conditioningChannels, side * f, side * f] },
        [CONDITIONING_SCALE]: { shape: [n] },
      };
    },
    condFeeds: (cond) => {
      const text = base.condFeeds(cond);
      const n = text["encoder_hidden_states"]!.shape[0]!;
      return { ...text, ...controlFeeds(controlCfg, cond, n) };
    },
    forward: (scope, sample, t, cond, fwd) => {
      const text = cond["encoder_hidden_states"];
      const image = cond[CONTROLNET_COND];
      if (!text || !image)
        throw new Error(`the controlled U-Net's graph needs encoder_hidden_states and ${CONTROLNET_COND}`);
      const n = sample.shape[0]!;
      const scale = cond[CONDITIONING_SCALE];
      return unet2dConditionWithControlNet(
        scope,
        unetCfg,
        scope.sub(CONTROLNET_SCOPE),
        controlCfg,
        sample,
        t,
        {
          encoderHiddenStates: text,
          controlnetCond: image,
          ...(scale ? { conditioningScale: o.reshape(scale, [n, 1, 1, 1]) } : {}), // [N, 1, 1, 1]
          guessMode,
        },
        fwd ?? {},
      );
    },
  };
}

/**
 * A loaded U-Net and ControlNet as one denoiser, with its compiled graphs (one per sample shape, text
 * length and guess mode; the scale is an input). Replacing weights in either model's `params`, or
 * changing the U-Net's LoRA adapters, is noticed at the next call.
 */
export class ControlledDenoiser {
  private readonly weights: Params = new Map();
  private readonly graphs: WeightGraphs;

  constructor(
    readonly unet: UNet2DConditionModel,
    readonly controlnet: ControlNetModel,
    session: SessionOptions = {},
  ) {
    checkControlNetFits(unet.typedConfig, controlnet.config);
    this.graphs = new WeightGraphs(this.weights, session, unet.lora);
  }

  /** The U-Net's registry view (class, geometry, conditioning): what generation checks against. */
  get bound(): BoundDenoiser {
    return this.unet.bound;
  }

  /**
   * The network on a conditioning: with a `control` image, the U-Net steered by the ControlNet in one
   * graph; without, the U-Net alone. Returns [N, out_channels, H, W].
   */
  async denoise(x: TensorLike, t: Timesteps, cond: Conditioning): Promise<HostTensor<"float32">> {
    if (!cond.control) return this.unet.denoise(x, t, cond);
    const sample = HostTensor.from<"float32">(x);
    const ucfg = this.unet.typedConfig;
    const ccfg = this.controlnet.config;
    const name = "ControlledDenoiser.denoise";
    if (sample.dtype !== "float32" || sample.shape.length !== 4 || sample.shape[1] !== ucfg.inChannels) {
      throw new Error(
        `${name}: sample must be float32 [N, ${ucfg.inChannels}, H, W], got ${sample.dtype} ${formatShape(sample.shape)}`,
      );
    }
    const [n, , h, w] = sample.shape as [number, number, number, number];
    const f = controlImageFactor(ccfg);
    const img = cond.control.image.shape;
    if (img.length === 4 && (img[2] !== h * f || img[3] !== w * f)) {
      throw new Error(
        `${name}: the control image is ${formatShape(img)}; for ${h}×${w} latents this ControlNet takes ${h * f}×${w * f} images (${f}× the latent side): resize it to the image size`,
      );
    }
    const guessMode = cond.control.guessMode ?? false;
    const bound = controlledBound(ucfg, ccfg, { guessMode });
    const condFeeds = bound.condFeeds(cond);
    const feeds: Record<string, HostTensor> = {
      sample,
      timestep: timestepFeed(name, t, n),
      ...condFeeds,
    };
    const specs: Record<string, InputSpec> = {};
    for (const [k, v] of Object.entries(feeds)) specs[k] = { shape: v.shape, dtype: v.dtype };
    const key = [guessMode, ...Object.entries(specs).map(([k, s]) => `${k}:${s.shape.join("x")}`)].join("|");
    this.refresh();
    const graph = await this.graphs.get(key, specs, (inp, scope) => {
      const { sample: xs, timestep, ...rest } = inp;
      return { out: bound.forward(scope, xs!, timestep!, rest) };
    });
    const out = await graph.run(feeds);
    return out["out"] as HostTensor<"float32">;
  }

  /** Releases the compiled graphs (the models' own graphs are theirs to release). */
  dispose(): void {
    this.graphs.dispose();
  }

  /** The weights the graphs embed: the U-Net's and the ControlNet's (prefixed), as they are now. */
  private refresh(): void {
    this.weights.clear();
    for (const [k, v] of this.unet.params) this.weights.set(k, v);
    for (const [k, v] of this.controlnet.params) this.weights.set(`${CONTROLNET_SCOPE}.${k}`, v);
  }
}

const made = new WeakMap<UNet2DConditionModel, ControlledDenoiser>();

/** The controlled denoiser of a U-Net and a ControlNet, made once per pair (its graphs reused across calls). */
export function controlledDenoiser(
  unet: UNet2DConditionModel,
  controlnet: ControlNetModel,
): ControlledDenoiser {
  const hit = made.get(unet);
  if (hit && hit.controlnet === controlnet) return hit;
  hit?.dispose();
  const d = new ControlledDenoiser(unet, controlnet);
  made.set(unet, d);
  return d;
}

/** Releases the graphs `controlledDenoiser` made for this U-Net (a pipeline's dispose calls it). */
export function releaseControlled(unet: UNet2DConditionModel): void {
  made.get(unet)?.dispose();
  made.delete(unet);
}
