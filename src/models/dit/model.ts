/**
 * `DiTTransformer2DModel`: diffusers' DiT (adaLN-Zero transformer over image patches) on the diffuse
 * engine, with the shared model machinery of ../denoiser-model.ts.
 *
 *   const dit = await DiTTransformer2DModel.fromPretrained(dir);       // or: await loadModel(dir)
 *   const y = await dit.forward(hiddenStates, timestep, { classLabels });
 */
import type { HostTensor } from "../../tensor/host.ts";
import { DenoiserModel, type TensorLike, type Timesteps } from "../denoiser-model.ts";
import type { DiTConfig } from "./config.ts";
import { DIT_DEF, ditLabelFeed } from "./def.ts";

export interface DiTCallOptions {
  /** One class id per sample (num_embeds_ada_norm for "no class"). */
  readonly classLabels?: readonly number[] | HostTensor;
}

export class DiTTransformer2DModel extends DenoiserModel<DiTConfig> {
  /** The registry entry the static constructors (fromConfig, fromParams, fromPretrained) build from. */
  static readonly def = DIT_DEF;

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
