/**
 * Text to image in latent space (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent
 * Diffusion Models" — Stable Diffusion): a CLIP tokenizer and text encoder turn each prompt into token
 * embeddings [77, D]; the denoiser works on VAE latents, cross-attending to them; classifier-free
 * guidance pairs every prompt with the empty prompt's embedding (or a negative prompt's); the VAE
 * decodes the final latents z as x = decode(z / scaling_factor + shift_factor).
 *
 * Prompts are checked before any work: a prompt must be text, not blank, and fit the encoder's
 * context (77 tokens with the start and end tokens) — an over-long prompt is refused with its length
 * rather than silently cut, so nothing the user wrote is lost.
 */
import type { Conditioning } from "../diffusion/conditioning.ts";
import { type CLIPTextModel, CLIPTextModelWithProjection } from "../models/text/clip-text-model.ts";
import type { CLIPTokenizer } from "../models/text/clip-tokenizer.ts";
import type { AutoencoderKL } from "../models/vae/model.ts";
import { HostTensor } from "../tensor/host.ts";
import type { LatentDecoder } from "./generate.ts";
import { assembleSd3Text, type Sd3TextLayout, sd3ClipStates } from "./sd3-text.ts";

/** The text side of a text-to-image pipeline. */
export interface TextEncoding {
  readonly tokenizer: CLIPTokenizer;
  readonly textEncoder: CLIPTextModel | CLIPTextModelWithProjection;
  /**
   * An SD3 pipeline's layout (sd3-text.ts): the text encoder is CLIP-L (with projection), this adds
   * CLIP-G and the zero T5 block; the conditioning is penultimate states and pooled text_embeds.
   * Absent: Stable Diffusion's (the last hidden state).
   */
  readonly sd3?: Sd3TextLayout;
}

export class PromptError extends Error {
  override name = "PromptError";
}

/** Prompts as given by a user or a request: each must be a non-blank string. */
export function checkPrompts(prompts: unknown, what = "prompt"): string[] {
  const list: unknown[] = Array.isArray(prompts) ? prompts : [prompts];
  if (list.length === 0) throw new PromptError(`no ${what} given: pass at least one`);
  return list.map((p, i) => {
    const where = list.length > 1 ? `${what} ${i + 1}` : what;
    if (typeof p !== "string")
      throw new PromptError(
        `${where} must be text, got ${p === null ? "null" : Array.isArray(p) ? "a list" : typeof p}`,
      );
    if (p.trim() === "")
      throw new PromptError(
        `${where} is empty: describe the image to generate (a text-to-image model draws what its prompt says)`,
      );
    return p;
  });
}

/**
 * Token ids for prompts, padded to the encoder's context; a prompt longer than the context is an
 * error that says how long it is (negative prompts may be empty: "" is the unconditional prompt).
 */
export function tokenizePrompts(
  tokenizer: CLIPTokenizer,
  prompts: readonly string[],
  what = "prompt",
): number[][] {
  const max = tokenizer.modelMaxLength;
  const { inputIds } = tokenizer.tokenize([...prompts], {
    maxLength: max,
    padding: "max_length",
    truncation: false,
  });
  return inputIds.map((ids, i) => {
    if (ids.length > max) {
      const where = prompts.length > 1 ? `${what} ${i + 1}` : what;
      throw new PromptError(
        `${where} is ${ids.length - 2} tokens long; the text encoder reads at most ${max - 2}: shorten it`,
      );
    }
    return ids;
  });
}

/**
 * The token embeddings [N, 77, D] of prompts (the encoder's last hidden state), as a text conditioning;
 * for an SD3 pipeline, its embeddings and pooled vectors (sd3-text.ts).
 */
export async function encodePrompts(
  enc: TextEncoding,
  prompts: readonly string[],
  what = "prompt",
): Promise<Conditioning> {
  const ids = tokenizePrompts(enc.tokenizer, prompts, what);
  if (enc.sd3) return encodeSd3(enc, enc.sd3, ids, prompts, what);
  const out = await enc.textEncoder.forward(ids);
  return { kind: "text", embeds: out.lastHiddenState as HostTensor<"float32"> };
}

/** SD3: each CLIP's penultimate states and text_embeds, assembled (a missing T5: zeros). */
async function encodeSd3(
  enc: TextEncoding,
  layout: Sd3TextLayout,
  ids: number[][],
  prompts: readonly string[],
  what: string,
): Promise<Conditioning> {
  const first = enc.textEncoder;
  if (!(first instanceof CLIPTextModelWithProjection))
    throw new Error(
      "an SD3 pipeline's text_encoder must be a CLIPTextModelWithProjection (it gives the pooled text_embeds)",
    );
  const opts = { outputHiddenStates: true };
  const skip = layout.clipSkip ?? 0;
  const a = sd3ClipStates(await first.forward(ids, opts), skip);
  let clip: Parameters<typeof assembleSd3Text>[0]["clip"] = [a];
  if (layout.second) {
    const ids2 = tokenizePrompts(layout.second.tokenizer, prompts, what);
    clip = [a, sd3ClipStates(await layout.second.textEncoder.forward(ids2, opts), skip)];
  }
  return assembleSd3Text({
    clip,
    t5: null,
    jointAttentionDim: layout.jointAttentionDim,
    maxSequenceLength: layout.maxSequenceLength,
  });
}

/**
 * The condition for `prompts` and its unconditional counterpart: the negative prompts, or the empty
 * prompt for each image (what the model was trained with under condition dropout).
 */
export async function promptConditions(
  enc: TextEncoding,
  prompts: readonly string[],
  negativePrompts?: readonly string[] | null,
): Promise<{ cond: Conditioning; uncond: Conditioning }> {
  if (negativePrompts && negativePrompts.length !== prompts.length) {
    throw new PromptError(
      `got ${negativePrompts.length} negative prompts for ${prompts.length} prompts: give one, or one per prompt`,
    );
  }
  for (const [i, p] of (negativePrompts ?? []).entries()) {
    if (typeof p !== "string")
      throw new PromptError(`negative prompt ${i + 1} must be text, got ${typeof p}`);
  }
  const negatives = negativePrompts ?? prompts.map(() => "");
  // one encoder run for both halves
  const both = await encodePrompts(enc, [...prompts, ...negatives]);
  if (both.kind !== "text") throw new Error("unreachable");
  const n = prompts.length;
  const [, l, d] = both.embeds.shape as [number, number, number];
  const pooled = both.pooled;
  const p = pooled?.shape[1] ?? 0;
  const half = (k: number): Conditioning => ({
    kind: "text",
    embeds: new HostTensor(both.embeds.data.slice(k * n * l * d, (k + 1) * n * l * d), [n, l, d]),
    ...(pooled ? { pooled: new HostTensor(pooled.data.slice(k * n * p, (k + 1) * n * p), [n, p]) } : {}),
  });
  return { cond: half(0), uncond: half(1) };
}

/** The VAE's decoder over model latents: z / scaling_factor + shift_factor → images in [−1, 1]. */
export function latentDecoder(vae: AutoencoderKL): LatentDecoder {
  const scale = vae.scalingFactor;
  const shift = vae.shiftFactor ?? 0;
  return (z) => {
    const u = new Float32Array(z.size);
    for (let i = 0; i < z.size; i++) u[i] = z.data[i]! / scale + shift;
    return vae.decode(new HostTensor(u, z.shape)) as Promise<HostTensor<"float32">>;
  };
}
