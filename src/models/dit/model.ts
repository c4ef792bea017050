/**
 * `DiTTransformer2DModel`: diffusers' DiT (adaLN-Zero transformer over image patches) on the diffuse
 * engine, with the shared model machinery of ../denoiser-model.ts.
 *
 *   const dit = await DiTTransformer2DModel.fromPretrained(dir);       // or: await loadModel(dir)
 *   const y = await dit.forward(hiddenStates, timestep, { classLabels });
 */
import type { HostTensor } from "../../tensor/host.ts";
import type { Params } from "../../tensor/params.ts";
import type { DiffusersConfig } from "../config-fields.ts";
import {
  DenoiserModel,
  type FromConfigOptions,
  type FromPretrainedOptions,
  initParts,
  type ModelOptions,
  paramParts,
  pretrainedParts,
  type TensorLike,
  type Timesteps,
} from "../denoiser-model.ts";
import type { DiTConfig } from "./config.ts";
import { DIT_DEF, ditLabelFeed } from "./def.ts";

export interface DiTCallOptions {
  /** One class id per sample (num_embeds_ada_norm for "no class"). */
  readonly classLabels?: readonly number[] | HostTensor;
}

export class DiTTransformer2DModel extends DenoiserModel<DiTConfig> {
  /** A freshly initialized model (DiT's initialization: adaLN-Zero), from a diffusers config or typed fields. */
  static fromConfig(
    config: DiffusersConfig | Partial<DiTConfig>,
    opts: FromConfigOptions = {},
  ): DiTTransformer2DModel {
    return new DiTTransformer2DModel(DIT_DEF, initParts(DIT_DEF, config, opts));
  }

  /** A model from given weights (checked against the config's names and shapes). */
  static fromParams(
    config: DiffusersConfig | Partial<DiTConfig>,
    params: Params,
    opts: ModelOptions = {},
  ): DiTTransformer2DModel {
    return new DiTTransformer2DModel(DIT_DEF, paramParts(DIT_DEF, config, params, opts));
  }

  /** Loads a diffusers DiTTransformer2DModel folder (config.json + diffusion_pytorch_model.safetensors). */
  static async fromPretrained(dir: string, opts: FromPretrainedOptions = {}): Promise<DiTTransformer2DModel> {
    return new DiTTransformer2DModel(DIT_DEF, pretrainedParts(DIT_DEF, dir, opts));
  }

  /**
   * Runs the transformer: hiddenStates [N, C, H, W] (H = W, a multiple of patch_size); timestep a number,
   * N numbers or a tensor of 1 or N values; classLabels one per sample. Returns [N, out_channels, H, W]
   * (with learned sigma: the prediction's channels first, then the variance's).
   */
  async forward(
    hiddenStates: TensorLike,
    timestep: Timesteps,
    opts: DiTCallOptions = {},
  ): Promise<HostTensor<"float32">> {
    const n = hiddenStates.shape[0] ?? 0;
    return this.run(hiddenStates, timestep, {
      class_labels: ditLabelFeed(this.typedConfig, opts.classLabels, n),
    });
  }
}
