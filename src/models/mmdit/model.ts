/**
 * `SD3Transformer2DModel`: diffusers' MM-DiT (Stable Diffusion 3 / 3.5) on the diffuse engine, with
 * the shared model machinery of ../denoiser-model.ts.
 *
 *   const mmdit = await SD3Transformer2DModel.fromPretrained(dir);     // or: await loadModel(dir)
 *   const v = await mmdit.forward(latents, 1000 * sigma, { encoderHiddenStates, pooledProjections });
 */
import { HostTensor } from "../../tensor/host.ts";
import type { DiffusersConfig } from "../config-fields.ts";
import {
  DenoiserModel,
  type FromConfigOptions,
  initParts,
  type ModelClass,
  type TensorLike,
  type Timesteps,
} from "../denoiser-model.ts";
import type { SD3Config } from "./config.ts";
import { SD3_DEF, sd3TextFeeds } from "./def.ts";

/** Both are needed; they are optional in the type (as DiT's classLabels) so that a call on any model type-checks, and a missing one is a clear error. */
export interface SD3CallOptions {
  /** Text token embeddings [N, L, joint_attention_dim] (CLIP-L ‖ CLIP-G penultimate states, zero-padded, then T5's). */
  readonly encoderHiddenStates?: TensorLike;
  /** Pooled text vectors [N, pooled_projection_dim] (CLIP-L ‖ CLIP-G pooled outputs). */
  readonly pooledProjections?: TensorLike;
}

export class SD3Transformer2DModel extends DenoiserModel<SD3Config> {
  /** The registry entry the static constructors (fromConfig, fromParams, fromPretrained) build from. */
  static readonly def = SD3_DEF;

  /**
   * A freshly initialized model: the class's initialisers, then the values its config determines
   * (the sincos position table, a persistent buffer in diffusers' weights).
   */
  static override fromConfig<C, T>(
    this: ModelClass<C, T>,
    config: DiffusersConfig | Partial<C>,
    opts: FromConfigOptions = {},
  ): T {
    // biome-ignore lint/complexity/noThisInStatic: `this` is the class called, as in DenoiserModel.fromConfig
    const def = this.def;
    const parts = initParts(def, config, opts);
    for (const [k, v] of def.buffers?.(parts.config) ?? []) parts.params.set(k, v);
    return new this(def, parts);
  }

  /**
   * Runs the transformer: hiddenStates [N, C, H, W] (H, W multiples of patch_size, at most
   * pos_embed_max_size·patch_size); timestep a number, N numbers or a tensor of 1 or N values (SD3's
   * flow-matching timesteps are σ·1000); the text embeddings and pooled vectors. Returns [N, out_channels, H, W].
   */
  async forward(
    hiddenStates: TensorLike,
    timestep: Timesteps,
    opts: SD3CallOptions = {},
  ): Promise<HostTensor<"float32">> {
    const n = hiddenStates.shape[0] ?? 0;
    const embeds =
      opts.encoderHiddenStates === undefined ? undefined : HostTensor.from(opts.encoderHiddenStates);
    const pooled = opts.pooledProjections === undefined ? undefined : HostTensor.from(opts.pooledProjections);
    return this.run(hiddenStates, timestep, sd3TextFeeds(this.typedConfig, embeds, pooled, n));
  }
}
