/**
 * `UNet2DModel`: diffusers' UNet2DModel on the diffuse engine (the shared model machinery of
 * ../denoiser-model.ts with this class's registry entry): config, weights by diffusers' names, a traced
 * graph per input shape, diffusers folders both ways.
 *
 *   const unet = await UNet2DModel.fromPretrained(dir);
 *   const eps = await unet.forward(x, 999, { classLabels: [3] });
 *   await unet.savePretrained(out, { dtype: "F16" });
 */

import type { HostTensor } from "../../tensor/host.ts";
import { DenoiserModel, type TensorLike, type Timesteps } from "../denoiser-model.ts";
import type { UNet2DConfig } from "./config.ts";
import { UNET2D_DEF, unetLabelFeed } from "./def.ts";

export type {
  FromConfigOptions,
  FromPretrainedOptions,
  ModelOptions,
  TensorLike,
} from "../denoiser-model.ts";

export interface UNetCallOptions {
  /** Class ids (num_class_embeds), class timesteps (class_embed_type "timestep") or [N, T] vectors ("identity"). */
  readonly classLabels?: readonly number[] | HostTensor;
}

export class UNet2DModel extends DenoiserModel<UNet2DConfig> {
  /** The registry entry the static constructors (fromConfig, fromParams, fromPretrained) build from. */
  static readonly def = UNET2D_DEF;

  /**
   * Runs the network: sample [N, C, H, W]; timestep a number (every sample), N numbers or a host
   * tensor of 1 or N values. Timesteps are used as given, fractions included (diffusers truncates a
   * Python float to an int; pass integers for its behaviour). Returns [N, out_channels, H, W].
   */
  async forward(
    sample: TensorLike,
    timestep: Timesteps,
    opts: UNetCallOptions = {},
  ): Promise<HostTensor<"float32">> {
    const n = sample.shape[0] ?? 0;
    const labels = unetLabelFeed(this.typedConfig, opts.classLabels, n);
    return this.run(sample, timestep, labels ? { class_labels: labels } : {});
  }
}
