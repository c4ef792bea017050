/**
 * Stable Diffusion 3's text conditioning (Esser et al. 2024, §5.2; diffusers'
 * `StableDiffusion3Pipeline.encode_prompt` at 58eb52c), assembled from what its text encoders give:
 *
 *   CLIP-L and CLIP-G (both CLIPTextModelWithProjection):
 *     token states  h₁ [N, 77, D₁], h₂ [N, 77, D₂]   hidden_states[−(clip_skip + 2)]: the penultimate layer,
 *                                                     before the final LayerNorm, by default
 *     pooled        p₁ [N, P₁],     p₂ [N, P₂]       text_embeds (the projected end-of-text state)
 *   T5-XXL (text_encoder_3): token states t [N, L₅, J], or none — then zeros [N, max_sequence_length, J]
 *
 *   encoder_hidden_states = [ pad_J(h₁ ‖ h₂) ; t ]   [N, 77 + L₅, J]   (‖ on features, ; on tokens,
 *                                                                       pad_J: zeros up to J features)
 *   pooled_projections    = p₁ ‖ p₂                   [N, P₁ + P₂]
 *
 * J is the transformer's joint_attention_dim (4096 for SD3, T5-XXL's width). Pure functions over host
 * tensors; running the encoders is the pipeline's part.
 */
import type { Conditioning } from "../diffusion/conditioning.ts";
import type { CLIPTextModelWithProjectionOutput } from "../models/text/clip-text-model.ts";
import { formatShape, HostTensor } from "../tensor/host.ts";

/** StableDiffusion3Pipeline's default T5 length (max_sequence_length), also the zero block's without T5. */
export const SD3_T5_LENGTH = 256;

/** What one CLIP text encoder gives SD3 for a batch of prompts. */
export interface Sd3ClipStates {
  /** Token states [N, L, D]: hidden_states[−(clipSkip + 2)] (the penultimate layer's by default). */
  readonly hidden: HostTensor<"float32">;
  /** The projected pooled vector [N, P] (text_embeds). */
  readonly pooled: HostTensor<"float32">;
}

/**
 * The states SD3 takes from a CLIPTextModelWithProjection's output (called with outputHiddenStates):
 * hidden_states[−(clipSkip + 2)] and text_embeds. clipSkip 0 is diffusers' `clip_skip=None`.
 */
export function sd3ClipStates(out: CLIPTextModelWithProjectionOutput, clipSkip = 0): Sd3ClipStates {
  const hs = out.hiddenStates;
  if (!hs) {
    throw new Error(
      "sd3ClipStates: the CLIP output has no hidden states; call the encoder with { outputHiddenStates: true }",
    );
  }
  if (!Number.isInteger(clipSkip) || clipSkip < 0 || clipSkip + 2 > hs.length) {
    throw new Error(
      `sd3ClipStates: clipSkip ${clipSkip} is out of range; use an integer from 0 to ${hs.length - 2} (the encoder has ${hs.length - 1} layers)`,
    );
  }
  return { hidden: hs[hs.length - 2 - clipSkip]!, pooled: out.textEmbeds };
}

export interface Sd3TextInputs {
  /** CLIP-L's and CLIP-G's states, in that order (text_encoder, text_encoder_2). */
  readonly clip: readonly [Sd3ClipStates, Sd3ClipStates];
  /** T5's token states [N, L, joint_attention_dim]; null when the pipeline has no text_encoder_3. */
  readonly t5: HostTensor<"float32"> | null;
  /** The transformer's joint_attention_dim: the width everything is padded to. */
  readonly jointAttentionDim: number;
  /** Tokens of the zero block that stands for a missing T5 (diffusers' max_sequence_length; default 256). */
  readonly maxSequenceLength?: number;
}

function checkRank(what: string, t: HostTensor, rank: number): void {
  if (t.dtype !== "float32" || t.shape.length !== rank) {
    throw new Error(
      `assembleSd3Text: ${what} must be float32 of rank ${rank}, got ${t.dtype} ${formatShape(t.shape)}`,
    );
  }
}

/**
 * The text conditioning of SD3 (embeds [N, L_clip + L₅, J] and pooled [N, P₁ + P₂]) from its text
 * encoders' states, as StableDiffusion3Pipeline.encode_prompt assembles them.
 */
export function assembleSd3Text(inp: Sd3TextInputs): Extract<Conditioning, { kind: "text" }> {
  const [a, b] = inp.clip;
  const j = inp.jointAttentionDim;
  for (const [what, t, r] of [
    ["CLIP-L's token states", a.hidden, 3],
    ["CLIP-G's token states", b.hidden, 3],
    ["CLIP-L's pooled vector", a.pooled, 2],
    ["CLIP-G's pooled vector", b.pooled, 2],
  ] as const)
    checkRank(what, t, r);
  const [n, lc, d1] = a.hidden.shape as [number, number, number];
  const d2 = b.hidden.shape[2]!;
  const sizes = [b.hidden.shape[0], a.pooled.shape[0], b.pooled.shape[0], inp.t5?.shape[0] ?? n];
  if (sizes.some((s) => s !== n)) {
    throw new Error(
      `assembleSd3Text: the encoders' outputs are for different batches (${[n, ...sizes].join(", ")} prompts); encode the same prompts with each`,
    );
  }
  if (b.hidden.shape[1] !== lc) {
    throw new Error(
      `assembleSd3Text: CLIP-L gives ${lc} tokens and CLIP-G ${b.hidden.shape[1]}; pad both prompts to the same length (77)`,
    );
  }
  if (d1 + d2 > j) {
    throw new Error(
      `assembleSd3Text: the CLIP states are ${d1} + ${d2} = ${d1 + d2} wide, more than joint_attention_dim ${j}; use a transformer whose joint_attention_dim is at least ${d1 + d2}`,
    );
  }
  let l5: number;
  if (inp.t5) {
    checkRank("T5's token states", inp.t5, 3);
    if (inp.t5.shape[2] !== j) {
      throw new Error(
        `assembleSd3Text: T5's states are ${formatShape(inp.t5.shape)}, but joint_attention_dim is ${j}: use the T5 encoder the transformer was trained with`,
      );
    }
    l5 = inp.t5.shape[1]!;
  } else {
    l5 = inp.maxSequenceLength ?? SD3_T5_LENGTH;
    if (!Number.isInteger(l5) || l5 < 0) {
      throw new Error(`assembleSd3Text: maxSequenceLength ${l5} must be an integer ≥ 0 (T5 tokens of zeros)`);
    }
  }

  const l = lc + l5;
  const embeds = new Float32Array(n * l * j); // zeros: the padding and a missing T5
  const h1 = a.hidden.data as Float32Array;
  const h2 = b.hidden.data as Float32Array;
  for (let s = 0; s < n; s++) {
    for (let tok = 0; tok < lc; tok++) {
      const at = (s * l + tok) * j;
      const src = s * lc + tok;
      embeds.set(h1.subarray(src * d1, (src + 1) * d1), at); // [0, D₁)
      embeds.set(h2.subarray(src * d2, (src + 1) * d2), at + d1); // [D₁, D₁ + D₂), then zeros to J
    }
    if (inp.t5) {
      const t5 = inp.t5.data as Float32Array;
      embeds.set(t5.subarray(s * l5 * j, (s + 1) * l5 * j), (s * l + lc) * j);
    }
  }

  const [p1, p2] = [a.pooled.shape[1]!, b.pooled.shape[1]!];
  const pooled = new Float32Array(n * (p1 + p2));
  for (let s = 0; s < n; s++) {
    pooled.set((a.pooled.data as Float32Array).subarray(s * p1, (s + 1) * p1), s * (p1 + p2));
    pooled.set((b.pooled.data as Float32Array).subarray(s * p2, (s + 1) * p2), s * (p1 + p2) + p1);
  }
  return {
    kind: "text",
    embeds: new HostTensor(embeds, [n, l, j]),
    pooled: new HostTensor(pooled, [n, p1 + p2]),
  };
}
