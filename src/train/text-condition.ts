/**
 * How the CLIP text encoder of a text-to-image run (trained jointly with the denoiser, from scratch)
 * conditions the denoiser: in the training graph (token ids → encoder → the denoiser's text inputs), as
 * a trained component, and as the pipeline's text side for previews.
 *
 *   UNet2DConditionModel (Stable Diffusion; a CLIPTextModel):
 *     encoder_hidden_states = the last hidden state (after the final LayerNorm)   [B, L, D], D = cross_attention_dim
 *   SD3Transformer2DModel (MM-DiT; a CLIPTextModelWithProjection): SD3's own rule
 *   (StableDiffusion3Pipeline.encode_prompt, pipelines/sd3-text.ts) with ONE CLIP and no T5:
 *     encoder_hidden_states = pad_J(hidden_states[−2])    [B, L, J]  the penultimate layer, before the
 *                                                                    final LayerNorm, zero-padded from D
 *                                                                    to joint_attention_dim J
 *     pooled_projections    = text_projection(pooled)     [B, P]     the text_embeds, P = pooled_projection_dim
 *
 * Why SD3's rule rather than the last hidden state for the MM-DiT: the exported folder is then read by
 * the one rule every SD3 folder is read by (diffusers' included), and the encoder's last layer still
 * trains — through the pooled vector, which conditions every block's adaLN. The context embedder of
 * the transformer is the projection to its width; a config with joint_attention_dim = hidden_size
 * pads nothing. No zero T5 tokens are appended (diffusers' default would add 256): the joint
 * attention then spends nothing on them, and the pipeline folder records `maxSequenceLength: 0`.
 */
import type { BoundDenoiser } from "../models/registry.ts";
import { clipTextForward, clipTextParamSpecs, clipTextProjection } from "../models/text/clip-text.ts";
import { type ClipTextConfig, resolveClipTextConfig } from "../models/text/clip-text-config.ts";
import { CLIPTextModel, CLIPTextModelWithProjection } from "../models/text/clip-text-model.ts";
import type { CLIPTokenizer } from "../models/text/clip-tokenizer.ts";
import type { TextEncoding } from "../pipelines/text-to-image.ts";
import * as o from "../tensor/ops.ts";
import type { ParamScope, Params } from "../tensor/params.ts";
import type { Tensor } from "../tensor/symbolic.ts";
import type { TrainComponent } from "./checkpoint.ts";

/** Zero T5 tokens after the CLIP tokens of diffuse's one-encoder MM-DiT (diffusers' max_sequence_length). */
export const MMDIT_T5_TOKENS = 0;

/** Whether a text encoder config.json object names CLIPTextModelWithProjection (architectures[0]). */
const withProjection = (config: Record<string, unknown>): boolean =>
  resolveClipTextConfig(config).architecture === "CLIPTextModelWithProjection";

/** The class of a text encoder config (CLIPTextModel unless it names CLIPTextModelWithProjection). */
export function textEncoderClass(
  config: Record<string, unknown>,
): typeof CLIPTextModel | typeof CLIPTextModelWithProjection {
  return withProjection(config) ? CLIPTextModelWithProjection : CLIPTextModel;
}

/** The text encoder as a trained component (transformers' folder layout: config.json + model.safetensors). */
export function textEncoderComponent(config: Record<string, unknown>, prefix: string): TrainComponent {
  const projection = withProjection(config);
  const cls = projection ? CLIPTextModelWithProjection : CLIPTextModel;
  return {
    name: "text_encoder",
    prefix,
    specs: clipTextParamSpecs(resolveClipTextConfig(config).config, { projection }),
    write: (dir, params) => cls.fromParams(config, params).savePretrained(dir),
    read: async (dir) => (await cls.fromPretrained(dir)).params,
  };
}

/** What the denoiser takes from the text encoder. */
export interface TextLayout {
  /** "sd": the last hidden state; "sd3": penultimate states padded to `jointDim`, and text_embeds. */
  readonly kind: "sd" | "sd3";
  /** The width the token states are padded to (SD3's joint_attention_dim; the U-Net's cross_attention_dim). */
  readonly jointDim: number;
}

/**
 * The layout a denoiser needs, checked against the text encoder's config (every error names the field
 * and the fix).
 */
export function textLayoutOf(model: BoundDenoiser, teJson: Record<string, unknown>): TextLayout {
  const spec = model.conditioning;
  if (spec.kind !== "text")
    throw new Error(
      `${model.className} is not text-conditioned: text to image needs a UNet2DConditionModel or an SD3Transformer2DModel`,
    );
  const te = resolveClipTextConfig(teJson).config;
  if (!spec.pooledDim) {
    if (te.hiddenSize !== spec.dim)
      throw new Error(
        `text_encoder.hidden_size (${te.hiddenSize}) must equal model.cross_attention_dim (${spec.dim})`,
      );
    return { kind: "sd", jointDim: spec.dim };
  }
  if (!withProjection(teJson))
    throw new Error(
      `${model.className} takes a pooled text vector, CLIPTextModelWithProjection's text_embeds: set text_encoder.architectures to ["CLIPTextModelWithProjection"] (and projection_dim to ${spec.pooledDim})`,
    );
  if (te.projectionDim !== spec.pooledDim)
    throw new Error(
      `text_encoder.projection_dim (${te.projectionDim}) must equal model.pooled_projection_dim (${spec.pooledDim}): the text_embeds are the pooled vector`,
    );
  if (te.hiddenSize > spec.dim)
    throw new Error(
      `text_encoder.hidden_size (${te.hiddenSize}) is wider than model.joint_attention_dim (${spec.dim}); the token states are zero-padded to it, never cut: raise joint_attention_dim or narrow the encoder`,
    );
  return { kind: "sd3", jointDim: spec.dim };
}

/** The denoiser's text inputs computed in the graph from token ids [B, L] (see the file comment). */
export function textCondition(
  layout: TextLayout,
  te: ClipTextConfig,
): (scope: ParamScope, batch: Readonly<Record<string, Tensor>>) => Record<string, Tensor> {
  return (scope, b): Record<string, Tensor> => {
    const enc = scope.sub("text_encoder");
    const r = clipTextForward(enc, te, b["cond.input_ids"]!);
    if (layout.kind === "sd") return { encoder_hidden_states: r.lastHiddenState }; // [B, L, D]
    const h = r.hiddenStates[r.hiddenStates.length - 2]!; // [B, L, D]: the penultimate layer
    const d = te.hiddenSize;
    return {
      encoder_hidden_states: o.pad(h, [0, 0, 0, 0, 0, layout.jointDim - d]), // [B, L, J]
      pooled_projections: clipTextProjection(enc, te, r.pooled), // [B, P]
    };
  };
}

/** The text side of a pipeline made of the run's tokenizer and its text encoder's weights. */
export function trainedTextEncoding(
  layout: TextLayout,
  tokenizer: CLIPTokenizer,
  teJson: Record<string, unknown>,
  params: Params,
): TextEncoding {
  const textEncoder = textEncoderClass(teJson).fromParams(teJson, params);
  return layout.kind === "sd"
    ? { tokenizer, textEncoder }
    : {
        tokenizer,
        textEncoder,
        sd3: { second: null, jointAttentionDim: layout.jointDim, maxSequenceLength: MMDIT_T5_TOKENS },
      };
}
