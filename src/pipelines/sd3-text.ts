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
 * tensors; running the encoders is the pipeline's part (text-to-image.ts encodePrompts).
 *
 * diffuse's own MM-DiT (trained jointly with ONE CLIPTextModelWithProjection, train/text-task.ts) uses
 * the same rule with one encoder: embeds = [ pad_J(h₁) ; zeros of maxSequenceLength tokens (0) ],
 * pooled = p₁. diffusers' pipeline needs both CLIPs; see `Sd3TextLayout`.
 */
import type { Conditioning } from "../diffusion/conditioning.ts";
import type {
  CLIPTextModelWithProjection,
  CLIPTextModelWithProjectionOutput,
} from "../models/text/clip-text-model.ts";
import type { CLIPTokenizer } from "../models/text/clip-tokenizer.ts";
import { formatShape, HostTensor } from "../tensor/host.ts";

/**
 * What an SD3 pipeline adds to its first CLIP (TextEncoding's tokenizer and text encoder, a
 * CLIPTextModelWithProjection) to turn prompts into its transformer's conditioning.
 */
export interface Sd3TextLayout {
  /** CLIP-G (text_encoder_2, tokenizer_2); null in diffuse's one-encoder layout. */
  readonly second: {
    readonly tokenizer: CLIPTokenizer;
    readonly textEncoder: CLIPTextModelWithProjection;
  } | null;
  /** The transformer's joint_attention_dim. */
  readonly jointAttentionDim: number;
  /** Zero tokens that stand for the missing T5: diffusers' max_sequence_length (256); diffuse's own MM-DiT: 0. */
  readonly maxSequenceLength: number;
  /** Layers skipped from the end before the penultimate (diffusers' clip_skip; default 0). */
  readonly clipSkip?: number;
}

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
  /** CLIP-L's and CLIP-G's states, in that order (text_encoder, text_encoder_2); or one encoder's (diffuse's one-encoder layout). */
  readonly clip: readonly [Sd3ClipStates] | readonly [Sd3ClipStates, Sd3ClipStates];
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
 * encoders' states, as StableDiffusion3Pipeline.encode_prompt assembles them (one CLIP: its states alone).
 */
export function assembleSd3Text(inp: Sd3TextInputs): Extract<Conditioning, { kind: "text" }> {
  const clip: readonly Sd3ClipStates[] = inp.clip;
  if (clip.length !== 1 && clip.length !== 2) {
    throw new Error(`assembleSd3Text: give one or two CLIP encoders' states, got ${clip.length}`);
  }
  const names = clip.length === 2 ? ["CLIP-L", "CLIP-G"] : ["CLIP"];
  const j = inp.jointAttentionDim;
  for (const [i, c] of clip.entries()) checkRank(`${names[i]}'s token states`, c.hidden, 3);
  for (const [i, c] of clip.entries()) checkRank(`${names[i]}'s pooled vector`, c.pooled, 2);
  const a = clip[0]!;
  const [n, lc] = a.hidden.shape as [number, number, number];
  const sizes = [
    ...clip.slice(1).map((c) => c.hidden.shape[0]),
    ...clip.map((c) => c.pooled.shape[0]),
    inp.t5?.shape[0] ?? n,
  ];
  if (sizes.some((s) => s !== n)) {
    throw new Error(
      `assembleSd3Text: the encoders' outputs are for different batches (${[n, ...sizes].join(", ")} prompts); encode the same prompts with each`,
    );
  }
  const b = clip[1];
  if (b && b.hidden.shape[1] !== lc) {
    throw new Error(
      `assembleSd3Text: CLIP-L gives ${lc} tokens and CLIP-G ${b.hidden.shape[1]}; pad both prompts to the same length (77)`,
    );
  }
  const widths = clip.map((c) => c.hidden.shape[2]!);
  const wide = widths.reduce((x, y) => x + y, 0);
  if (wide > j) {
    const sum = widths.length > 1 ? `${widths.join(" + ")} = ${wide}` : `${wide}`;
    throw new Error(
      `assembleSd3Text: the CLIP states are ${sum} wide, more than joint_attention_dim ${j}; use a transformer whose joint_attention_dim is at least ${wide}`,
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
  for (let s = 0; s < n; s++) {
    for (let tok = 0; tok < lc; tok++) {
      const src = s * lc + tok;
      let at = (s * l + tok) * j;
      for (const [i, c] of clip.entries()) {
        const d = widths[i]!;
        embeds.set((c.hidden.data as Float32Array).subarray(src * d, (src + 1) * d), at); // CLIP-L, then CLIP-G
        at += d; // then zeros up to J
      }
    }
    if (inp.t5) {
      const t5 = inp.t5.data as Float32Array;
      embeds.set(t5.subarray(s * l5 * j, (s + 1) * l5 * j), (s * l + lc) * j);
    }
  }

  const ps = clip.map((c) => c.pooled.shape[1]!);
  const p = ps.reduce((x, y) => x + y, 0);
  const pooled = new Float32Array(n * p);
  for (let s = 0; s < n; s++) {
    let at = s * p;
    for (const [i, c] of clip.entries()) {
      pooled.set((c.pooled.data as Float32Array).subarray(s * ps[i]!, (s + 1) * ps[i]!), at);
      at += ps[i]!;
    }
  }
  return {
    kind: "text",
    embeds: new HostTensor(embeds, [n, l, j]),
    pooled: new HostTensor(pooled, [n, p]),
  };
}
