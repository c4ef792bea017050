/**
 * SD3Transformer2DModel's registry entry: a text conditioning of token embeddings
 * [N, L, joint_attention_dim] (`encoder_hidden_states`) with its pooled vector
 * [N, pooled_projection_dim] (`pooled_projections`), both required. Its "unconditional" counterpart is
 * the empty (or negative) prompt's embeddings, which the pipeline supplies. The attention mask of a
 * text conditioning is not used: every token is attended to, as diffusers' StableDiffusion3Pipeline
 * passes no mask.
 */
import type { Conditioning } from "../../diffusion/conditioning.ts";
import type { InputSpec } from "../../runtime/compile.ts";
import { formatShape, type HostTensor } from "../../tensor/host.ts";
import type { DenoiserDef } from "../registry.ts";
import { SD3_CLASS_NAME, SD3_SCHEMA, type SD3Config, sd3OutChannels } from "./config.ts";
import { mmdit, mmditParamSpecs, POS_TABLE, sd3PositionTable } from "./mmdit.ts";

/** Tokens per prompt graphs are traced for unless told: CLIP's 77 then T5's 256 (StableDiffusion3Pipeline's max_sequence_length). */
export const SD3_TEXT_LENGTH = 77 + 256;

/** A float32 host tensor of rank `rank`, checked. */
function float32(name: string, what: string, t: HostTensor, rank: number): HostTensor<"float32"> {
  if (t.dtype !== "float32" || t.shape.length !== rank) {
    throw new Error(
      `${name}: ${what} must be a float32 tensor of rank ${rank}, got ${t.dtype} ${formatShape(t.shape)}`,
    );
  }
  return t as HostTensor<"float32">;
}

/** The text embeddings [n, L, joint_attention_dim] and pooled vectors [n, pooled_projection_dim] as the graph's feeds, checked. */
export function sd3TextFeeds(
  cfg: SD3Config,
  embeds: HostTensor | undefined,
  pooled: HostTensor | undefined,
  n: number,
  name = `${SD3_CLASS_NAME}.forward`,
): { encoder_hidden_states: HostTensor<"float32">; pooled_projections: HostTensor<"float32"> } {
  if (embeds === undefined || pooled === undefined) {
    throw new Error(
      `${name}: SD3 is text-conditioned; pass { encoderHiddenStates } [N, L, ${cfg.jointAttentionDim}] and { pooledProjections } [N, ${cfg.pooledProjectionDim}] (the empty prompt's for "no text")`,
    );
  }
  const e = float32(name, "encoderHiddenStates", embeds, 3);
  const jd = cfg.jointAttentionDim;
  if (e.shape[2] !== jd) {
    throw new Error(
      `${name}: the text embeddings are ${formatShape(e.shape)}, but joint_attention_dim is ${jd}: pad the text encoders' features to ${jd} (as StableDiffusion3Pipeline pads CLIP's) or use a model with joint_attention_dim ${e.shape[2]}`,
    );
  }
  if (e.shape[0] !== n)
    throw new Error(`${name}: got text embeddings for ${e.shape[0]} samples and a batch of ${n}`);
  if (e.shape[1]! < 1)
    throw new Error(`${name}: the text embeddings hold no tokens (${formatShape(e.shape)})`);
  const p = float32(name, "pooledProjections", pooled, 2);
  const pd = cfg.pooledProjectionDim;
  if (p.shape[1] !== pd) {
    throw new Error(
      `${name}: the pooled text vectors are ${formatShape(p.shape)}, but pooled_projection_dim is ${pd}: concatenate both CLIP encoders' pooled outputs (${pd} wide in all)`,
    );
  }
  if (p.shape[0] !== n)
    throw new Error(`${name}: got pooled text vectors for ${p.shape[0]} samples and a batch of ${n}`);
  return { encoder_hidden_states: e, pooled_projections: p };
}

function textFeeds(c: SD3Config, cond: Conditioning): Record<string, HostTensor> {
  if (cond.kind !== "text") {
    throw new Error(
      `${SD3_CLASS_NAME} is text-conditioned; pass a "text" conditioning with embeds and pooled, not "${cond.kind}" (the empty prompt's embedding stands for "no text")`,
    );
  }
  if (cond.control)
    throw new Error(`${SD3_CLASS_NAME} takes no control image (SD3 ControlNets are not supported)`);
  if (!cond.pooled) {
    throw new Error(
      `${SD3_CLASS_NAME} needs the pooled text vector too: add "pooled" [N, ${c.pooledProjectionDim}] to the text conditioning`,
    );
  }
  const n = cond.embeds.shape[0] ?? 0;
  return sd3TextFeeds(c, cond.embeds, cond.pooled, n, SD3_CLASS_NAME);
}

export const SD3_DEF: DenoiserDef<SD3Config> = {
  className: SD3_CLASS_NAME,
  component: "transformer",
  pipelineClass: "StableDiffusion3Pipeline",
  schema: SD3_SCHEMA,
  paramSpecs: mmditParamSpecs,
  buffers: (c) => new Map([[POS_TABLE, sd3PositionTable(c)]]),
  geometry: (c) => ({
    inChannels: c.inChannels,
    outChannels: sd3OutChannels(c),
    sampleSize: c.sampleSize,
    multipleOf: c.patchSize,
  }),
  conditioning: (c) => ({ kind: "text", dim: c.jointAttentionDim, pooledDim: c.pooledProjectionDim }),
  condInputs: (c, n, sizes): Record<string, InputSpec> => ({
    encoder_hidden_states: { shape: [n, sizes?.textLength ?? SD3_TEXT_LENGTH, c.jointAttentionDim] },
    pooled_projections: { shape: [n, c.pooledProjectionDim] },
  }),
  condFeeds: textFeeds,
  forward: (scope, c, sample, timestep, cond) => {
    const text = cond["encoder_hidden_states"];
    const pooled = cond["pooled_projections"];
    if (!text || !pooled) {
      throw new Error(
        "sd3: the graph needs encoder_hidden_states and pooled_projections (the text conditioning)",
      );
    }
    return mmdit(scope, c, sample, timestep, text, pooled);
  },
};
