/**
 * `ControlNetModel`: diffusers' ControlNet (Zhang, Rao & Agrawala 2023) on the diffuse engine — config,
 * weights by diffusers' names, diffusers folders both ways, `fromUnet` (a trainable copy of a
 * UNet2DConditionModel's encoder whose zero convolutions make it a no-op at first), and a traced
 * graph per input shape with the weights embedded as constants.
 *
 *   const cn = await ControlNetModel.fromPretrained(dir);   // a controlnet/ folder or a pipeline folder
 *   const r = await cn.forward(latents, t, { encoderHiddenStates, controlnetCond, conditioningScale: 0.8 });
 *   const eps = await unet.forward(latents, t, {
 *     encoderHiddenStates,
 *     downBlockAdditionalResiduals: r.downBlockResSamples,
 *     midBlockAdditionalResidual: r.midBlockResSample,
 *   });
 *
 * For one session that runs both, trace `unet2dConditionWithControlNet` (controlnet.ts).
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { SessionOptions } from "../../runtime/options.ts";
import type { CompiledGraph } from "../../runtime/session.ts";
import { formatShape, HostTensor } from "../../tensor/host.ts";
import { countParams, type ParamSpec, type Params } from "../../tensor/params.ts";
import { Rng } from "../../tensor/rng.ts";
import type { Tensor } from "../../tensor/symbolic.ts";
import type { DiffusersConfig } from "../config-fields.ts";
import type {
  FromConfigOptions,
  FromPretrainedOptions,
  ModelOptions,
  TensorLike,
  Timesteps,
} from "../denoiser-model.ts";
import { timestepFeed } from "../denoiser-model.ts";
import {
  CONFIG_NAME,
  checkModelDir,
  checkWeights,
  parseConfigAt,
  readConfigJson,
  readWeights,
  type SaveOptions,
  writePretrained,
} from "../pretrained.ts";
import type { UNet2DConditionConfig } from "../unet-cond/config.ts";
import { WeightGraphs } from "../weight-graphs.ts";
import {
  CONTROLNET_CLASS_NAME,
  type ControlNetConfig,
  controlNetConfigFromUNet,
  controlNetConfigToDiffusers,
  type FromUNetFields,
  resolveControlNetConfig,
} from "./config.ts";
import { controlNetForward, controlNetParamSpecs, initControlNet } from "./controlnet.ts";

export interface ControlNetCallOptions {
  /** Text embeddings [N, L, cross_attention_dim] (the U-Net's). */
  readonly encoderHiddenStates: TensorLike;
  /** The control image [N, conditioning_channels, H·f, W·f] (f = 8 for Stable Diffusion's ControlNets), in [0, 1]. */
  readonly controlnetCond: TensorLike;
  /** Multiplies every residual (default 1). */
  readonly conditioningScale?: number;
  /** diffusers' guess_mode: residuals scaled from 0.1 (shallowest skip) to 1 (mid block). */
  readonly guessMode?: boolean;
}

/** The residuals, already scaled: pass them to UNet2DConditionModel.forward as they are. */
export interface ControlNetOutput {
  /** One per U-Net skip (conv_in, each resnet, each downsampler), in order. */
  readonly downBlockResSamples: HostTensor<"float32">[];
  /** Added to the U-Net's mid block output [N, C_last, h, w]. */
  readonly midBlockResSample: HostTensor<"float32">;
}

/** What `fromUnet` copies and builds. */
export interface FromUnetOptions extends FromUNetFields, FromConfigOptions {
  /** Copy the U-Net's encoder weights (default true; false: every weight fresh, as diffusers). */
  readonly loadWeightsFromUnet?: boolean;
}

/** The U-Net side `fromUnet` reads: a UNet2DConditionModel, or its typed config and weights. */
export interface UNetCondLike {
  readonly typedConfig: UNet2DConditionConfig;
  readonly params: Params;
}

const NAME = `${CONTROLNET_CLASS_NAME}.forward`;
/** The weights a ControlNet copies from its U-Net: every name under these modules. */
const COPIED = ["conv_in.", "time_embedding.", "down_blocks.", "mid_block."];

/** A pipeline folder holds its ControlNet in controlnet/; a ControlNet folder holds config.json itself. */
function controlNetFolder(dir: string): string {
  checkModelDir(dir, CONTROLNET_CLASS_NAME);
  const sub = join(dir, "controlnet");
  return !existsSync(join(dir, CONFIG_NAME)) && existsSync(join(sub, CONFIG_NAME)) ? sub : dir;
}

function floatFeed(what: string, t: TensorLike, rank: number): HostTensor<"float32"> {
  const h = HostTensor.from<"float32">(t);
  if (h.dtype !== "float32" || h.shape.length !== rank) {
    throw new Error(
      `${NAME}: ${what} must be a float32 tensor of rank ${rank}, got ${h.dtype} ${formatShape(h.shape)}`,
    );
  }
  return h;
}

export class ControlNetModel {
  private readonly graphs: WeightGraphs;

  /** Prefer the static constructors, which check what they are given. */
  constructor(
    /** The typed config (camelCase; `diffusersConfig` is the config.json form). */
    readonly config: ControlNetConfig,
    /** Weights by diffusers' names, in state-dict order. Replace values (not their data) to swap weights. */
    readonly params: Params,
    session: SessionOptions = {},
  ) {
    this.graphs = new WeightGraphs(params, session);
  }

  /** A freshly initialized model (PyTorch's default init; zero convolutions zero), from a config.json object or typed fields. */
  static fromConfig(
    config: DiffusersConfig | Partial<ControlNetConfig>,
    opts: FromConfigOptions = {},
  ): ControlNetModel {
    const c = resolveControlNetConfig(config);
    return new ControlNetModel(c, initControlNet(c, new Rng(opts.seed ?? 0)), opts.session);
  }

  /** A model from given weights (checked against the config's names and shapes). */
  static fromParams(
    config: DiffusersConfig | Partial<ControlNetConfig>,
    params: Params,
    opts: ModelOptions = {},
  ): ControlNetModel {
    const c = resolveControlNetConfig(config);
    const checked = checkWeights(controlNetParamSpecs(c), params, `${CONTROLNET_CLASS_NAME}.fromParams`);
    return new ControlNetModel(c, checked, opts.session);
  }

  /** Loads a diffusers ControlNetModel folder (config.json + diffusion_pytorch_model.safetensors), or a pipeline's controlnet/. */
  static async fromPretrained(dir: string, opts: FromPretrainedOptions = {}): Promise<ControlNetModel> {
    const folder = controlNetFolder(dir);
    const json = readConfigJson(folder, CONTROLNET_CLASS_NAME, "controlnet");
    const c = parseConfigAt(folder, json, resolveControlNetConfig);
    const params = readWeights(folder, CONTROLNET_CLASS_NAME, controlNetParamSpecs(c), {
      ...(opts.variant ? { variant: opts.variant } : {}),
    });
    return new ControlNetModel(c, params, opts.session);
  }

  /**
   * diffusers' `from_unet`: the U-Net's encoder config and (by default) a copy of its conv_in, time
   * embedding, down blocks and mid block; the conditioning embedding fresh; the zero convolutions
   * (and the embedding's conv_out) zero, so the ControlNet's residuals are zero until it is trained.
   * The copied tensors are shared with the U-Net (weights are replaced, never written in place).
   */
  static fromUnet(unet: UNetCondLike, opts: FromUnetOptions = {}): ControlNetModel {
    const c = controlNetConfigFromUNet(unet.typedConfig, opts);
    const params = initControlNet(c, new Rng(opts.seed ?? 0));
    if (opts.loadWeightsFromUnet ?? true) {
      for (const [name, fresh] of params) {
        if (!COPIED.some((p) => name.startsWith(p))) continue;
        const w = unet.params.get(name);
        if (!w || formatShape(w.shape) !== formatShape(fresh.shape)) {
          throw new Error(
            `${CONTROLNET_CLASS_NAME}.fromUnet: the U-Net's "${name}" is ${w ? formatShape(w.shape) : "missing"}, its config needs ${formatShape(fresh.shape)}: the weights do not fit the U-Net's config`,
          );
        }
        params.set(name, w);
      }
    }
    return new ControlNetModel(c, params, opts.session);
  }

  /** The config as diffusers writes it (snake_case keys, `_class_name`, `_diffusers_version`). */
  get diffusersConfig(): DiffusersConfig {
    return controlNetConfigToDiffusers(this.config);
  }

  get specs(): ParamSpec[] {
    return controlNetParamSpecs(this.config);
  }

  get numParams(): number {
    return countParams(this.params);
  }

  /** Writes config.json and diffusion_pytorch_model.safetensors (F32 by default, or F16/BF16). */
  async savePretrained(dir: string, opts: SaveOptions = {}): Promise<void> {
    writePretrained(dir, this.diffusersConfig, this.params, opts);
  }

  /**
   * Runs the ControlNet: sample [N, in_channels, H, W] (H, W multiples of 2^(blocks − 1)); timestep a
   * number, N numbers or a tensor of 1 or N values; the text embeddings and the control image
   * [N, conditioning_channels, H·f, W·f]. Returns the residuals scaled as diffusers returns them.
   */
  async forward(
    sample: TensorLike,
    timestep: Timesteps,
    opts: ControlNetCallOptions,
  ): Promise<ControlNetOutput> {
    const c = this.config;
    const x = floatFeed("sample", sample, 4);
    const [n, cin, hgt, wid] = x.shape as [number, number, number, number];
    if (cin !== c.inChannels) {
      throw new Error(
        `${NAME}: sample must be [N, ${c.inChannels}, H, W] (in_channels), got ${formatShape(x.shape)}`,
      );
    }
    if (opts?.encoderHiddenStates === undefined || opts.controlnetCond === undefined) {
      throw new Error(
        `${NAME}: pass { encoderHiddenStates, controlnetCond } (the text embeddings and the control image)`,
      );
    }
    const text = floatFeed("encoderHiddenStates", opts.encoderHiddenStates, 3);
    if (text.shape[0] !== n || text.shape[2] !== c.crossAttentionDim) {
      throw new Error(
        `${NAME}: encoderHiddenStates must be [${n}, L, ${c.crossAttentionDim}] (cross_attention_dim), got ${formatShape(text.shape)}`,
      );
    }
    const cond = floatFeed("controlnetCond", opts.controlnetCond, 4);
    const f = 2 ** (c.conditioningEmbeddingOutChannels.length - 1);
    const want = [n, c.conditioningChannels, hgt * f, wid * f];
    if (formatShape(cond.shape) !== formatShape(want)) {
      const why =
        cond.shape[1] !== c.conditioningChannels
          ? `this ControlNet takes ${c.conditioningChannels}-channel control images (conditioning_channels)`
          : `the control image must be ${f}× the ${hgt}×${wid} sample: resize it to ${hgt * f}×${wid * f}`;
      throw new Error(
        `${NAME}: controlnetCond must be ${formatShape(want)}, got ${formatShape(cond.shape)}; ${why}`,
      );
    }
    const scale = opts.conditioningScale ?? 1;
    if (!Number.isFinite(scale))
      throw new Error(`${NAME}: conditioningScale must be a finite number, got ${scale}`);
    const feeds: Record<string, HostTensor> = {
      sample: x,
      timestep: timestepFeed(CONTROLNET_CLASS_NAME, timestep, n),
      encoder_hidden_states: text,
      controlnet_cond: cond,
      conditioning_scale: new HostTensor(Float32Array.of(scale), [1]),
    };
    const g = await this.graphFor(feeds, opts.guessMode ?? false);
    const out = (await g.run(feeds)) as Record<string, HostTensor<"float32">>;
    const k = Object.keys(out).filter((name) => name.startsWith("down.")).length;
    return {
      downBlockResSamples: Array.from({ length: k }, (_, i) => out[`down.${i}`]!),
      midBlockResSample: out["mid"]!,
    };
  }

  /** Releases the compiled graphs (they are compiled again on the next call). */
  dispose(): void {
    this.graphs.dispose();
  }

  /** The graph for these feeds' shapes and the guess mode (the scale is an input: one graph for every scale). */
  private graphFor(feeds: Record<string, HostTensor>, guessMode: boolean): Promise<CompiledGraph> {
    const specs = Object.fromEntries(Object.entries(feeds).map(([k, t]) => [k, { shape: t.shape }]));
    const key = [guessMode, ...Object.entries(specs).map(([k, s]) => `${k}:${s.shape.join("x")}`)].join("|");
    return this.graphs.get(key, specs, (inp, scope) => {
      const r = controlNetForward(scope, this.config, inp["sample"]!, inp["timestep"]!, {
        encoderHiddenStates: inp["encoder_hidden_states"]!,
        controlnetCond: inp["controlnet_cond"]!,
        conditioningScale: inp["conditioning_scale"]!,
        guessMode,
      });
      const out: Record<string, Tensor> = { mid: r.midBlockResSample };
      r.downBlockResSamples.forEach((t, i) => {
        out[`down.${i}`] = t;
      });
      return out;
    });
  }
}
