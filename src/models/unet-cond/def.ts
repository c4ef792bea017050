/**
 * UNet2DConditionModel's registry entry: its config table, parameters, forward, and how a text
 * conditioning (token embeddings [N, L, cross_attention_dim]) becomes the graph input
 * `encoder_hidden_states`. Its "unconditional" counterpart is the empty prompt's embedding, which the
 * pipeline supplies. The attention mask of a text conditioning is not used: every token is attended
 * to, as in diffusers' StableDiffusionPipeline, which passes no encoder_attention_mask.
 *
 * Besides the text, the graph may take ControlNet residuals (`down_block_additional_residuals.<i>`,
 * one per skip, with `mid_block_additional_residual`) and LCM's `timestep_cond`; the model class
 * feeds them (model.ts); a `Conditioning` carries the text alone.
 */
import type { Conditioning } from "../../diffusion/conditioning.ts";
import type { InputSpec } from "../../runtime/compile.ts";
import { formatShape, type HostTensor } from "../../tensor/host.ts";
import type { Tensor } from "../../tensor/symbolic.ts";
import type { DenoiserDef } from "../registry.ts";
import {
  condDownsamplingSteps,
  UNET2D_COND_CLASS_NAME,
  UNET2D_COND_SCHEMA,
  type UNet2DConditionConfig,
} from "./config.ts";
import { type UNetCondInputs, unet2dCondition, unetCondParamSpecs } from "./unet-cond.ts";

/** The text length graphs are traced for unless told (CLIP's context, Stable Diffusion's prompts). */
export const DEFAULT_TEXT_LENGTH = 77;

/** Graph input names of the optional inputs. */
export const DOWN_RESIDUAL_PREFIX = "down_block_additional_residuals.";
export const MID_RESIDUAL = "mid_block_additional_residual";
export const TIMESTEP_COND = "timestep_cond";

/** A float32 host tensor, checked: `what` must be float32 of rank `rank`. */
function float32(name: string, what: string, t: HostTensor, rank: number): HostTensor<"float32"> {
  if (t.dtype !== "float32" || t.shape.length !== rank) {
    throw new Error(
      `${name}: ${what} must be a float32 tensor of rank ${rank}, got ${t.dtype} ${formatShape(t.shape)}`,
    );
  }
  return t as HostTensor<"float32">;
}

/** Token embeddings [n, L, cross_attention_dim] as the encoder_hidden_states feed, checked. */
export function textEmbedsFeed(
  cfg: UNet2DConditionConfig,
  embeds: HostTensor | undefined,
  n: number,
  name = `${UNET2D_COND_CLASS_NAME}.forward`,
): HostTensor<"float32"> {
  if (embeds === undefined) {
    throw new Error(
      `${name}: this U-Net is text-conditioned; pass { encoderHiddenStates } [N, L, ${cfg.crossAttentionDim}] (the empty prompt's embedding for "no text")`,
    );
  }
  const e = float32(name, "encoderHiddenStates", embeds, 3);
  const d = cfg.crossAttentionDim;
  if (e.shape[2] !== d) {
    throw new Error(
      `${name}: the text embeddings are ${formatShape(e.shape)}, but cross_attention_dim is ${d}: use a text encoder whose hidden size is ${d} (or a U-Net with cross_attention_dim ${e.shape[2]})`,
    );
  }
  if (e.shape[0] !== n) {
    throw new Error(`${name}: got text embeddings for ${e.shape[0]} samples and a batch of ${n}`);
  }
  if (e.shape[1]! < 1)
    throw new Error(`${name}: the text embeddings hold no tokens (${formatShape(e.shape)})`);
  return e;
}

/** The `encoder_hidden_states` feed of a text conditioning (other kinds are refused). */
function textFeeds(c: UNet2DConditionConfig, cond: Conditioning): Record<string, HostTensor> {
  const name = UNET2D_COND_CLASS_NAME;
  if (cond.kind !== "text") {
    throw new Error(
      `${name} is text-conditioned (cross_attention_dim ${c.crossAttentionDim}); pass a "text" conditioning, not "${cond.kind}" (the empty prompt's embedding stands for "no text")`,
    );
  }
  if (cond.pooled) {
    throw new Error(
      `${name} takes no pooled text vector (addition_embed_type is null); drop "pooled" from the conditioning`,
    );
  }
  const n = cond.embeds.shape[0] ?? 0;
  return { encoder_hidden_states: textEmbedsFeed(c, cond.embeds, n, name) };
}

/** The traced forward's inputs from the graph inputs by name. */
function condTensors(cond: Readonly<Record<string, Tensor | undefined>>): UNetCondInputs {
  const encoderHiddenStates = cond["encoder_hidden_states"];
  if (!encoderHiddenStates) {
    throw new Error("unet2dCondition: the graph needs encoder_hidden_states (the text embeddings)");
  }
  const down: Tensor[] = [];
  for (let i = 0; cond[`${DOWN_RESIDUAL_PREFIX}${i}`]; i++) down.push(cond[`${DOWN_RESIDUAL_PREFIX}${i}`]!);
  const mid = cond[MID_RESIDUAL];
  const timestepCond = cond[TIMESTEP_COND];
  return {
    encoderHiddenStates,
    ...(down.length > 0 ? { downBlockAdditionalResiduals: down } : {}),
    ...(mid ? { midBlockAdditionalResidual: mid } : {}),
    ...(timestepCond ? { timestepCond } : {}),
  };
}

export const UNET2D_COND_DEF: DenoiserDef<UNet2DConditionConfig> = {
  className: UNET2D_COND_CLASS_NAME,
  component: "unet",
  pipelineClass: "StableDiffusionPipeline",
  schema: UNET2D_COND_SCHEMA,
  paramSpecs: unetCondParamSpecs,
  geometry: (c) => ({
    inChannels: c.inChannels,
    outChannels: c.outChannels,
    sampleSize:
      typeof c.sampleSize === "number" ? c.sampleSize : c.sampleSize === null ? null : c.sampleSize[0],
    multipleOf: 2 ** condDownsamplingSteps(c),
  }),
  conditioning: (c) => ({ kind: "text", dim: c.crossAttentionDim, pooledDim: null }),
  condInputs: (c, n, sizes): Record<string, InputSpec> => ({
    encoder_hidden_states: { shape: [n, sizes?.textLength ?? DEFAULT_TEXT_LENGTH, c.crossAttentionDim] },
  }),
  condFeeds: textFeeds,
  forward: (scope, c, sample, timestep, cond, opts) =>
    unet2dCondition(scope, c, sample, timestep, condTensors(cond), opts ?? {}),
};
