/**
 * Conditioning as one type: what a denoiser `(x, t, cond) → prediction` is conditioned on, for a batch.
 *
 * - `none`: an unconditional model (only the batch size);
 * - `class`: one class label per sample (DiT, class-conditional U-Nets);
 * - `text`: token embeddings [N, L, D] from a text encoder, with their attention mask [N, L] and a
 *   pooled vector [N, P] where the model takes one (Stable Diffusion, SD3);
 * each optionally with a `control` image [N, C, H, W] and its strength (ControlNet's conditioning_scale:
 * one for the batch, or one per sample — guess mode gives the unconditional half 0, as diffusers'
 * StableDiffusionControlNetPipeline zeroes that half's residuals).
 *
 * Every kind has an "unconditional" counterpart of the same kind: the null class label the model was
 * trained with (its condition dropout), the empty prompt's embedding, or a negative prompt's. The
 * model (for labels) or the pipeline (for prompts) supplies it; classifier-free guidance (guidance.ts)
 * evaluates [uncond | cond] in ONE batched forward, so both halves must be concatenable: `concatConditions`.
 */
import { formatShape, HostTensor } from "../tensor/host.ts";

/** A control image and its strength (ControlNet's conditioning_scale). */
export interface ControlInput {
  /** [N, C, H, W] in [0, 1] (one per sample; H, W the ControlNet's factor × the latent size). */
  readonly image: HostTensor<"float32">;
  /** conditioning_scale: one for the batch, or one per sample (length N). */
  readonly scale: number | readonly number[];
  /** diffusers' guess_mode: residuals scaled from 0.1 (shallowest skip) to 1 (mid block). */
  readonly guessMode?: boolean;
}

/** The scale of each of n samples. */
export function controlScales(c: ControlInput, n: number): number[] {
  if (typeof c.scale === "number") return Array.from({ length: n }, () => c.scale as number);
  if (c.scale.length !== n)
    throw new Error(`got ${c.scale.length} control scales for a batch of ${n}; give one, or one per sample`);
  return [...c.scale];
}

export type Conditioning =
  | { readonly kind: "none"; readonly batch: number; readonly control?: ControlInput }
  | { readonly kind: "class"; readonly labels: readonly number[]; readonly control?: ControlInput }
  | {
      readonly kind: "text";
      /** Token embeddings [N, L, D]. */
      readonly embeds: HostTensor<"float32">;
      /** 1 for a real token, 0 for padding [N, L] (absent: every token counts). */
      readonly mask?: HostTensor<"float32">;
      /** A pooled text vector [N, P] (SD3, SDXL). */
      readonly pooled?: HostTensor<"float32">;
      readonly control?: ControlInput;
    };

export type ConditioningKind = Conditioning["kind"];

/** Class labels for a batch. */
export const classCondition = (labels: readonly number[]): Conditioning => ({ kind: "class", labels });

/** No condition, for a batch of `batch`. */
export const noCondition = (batch: number): Conditioning => ({ kind: "none", batch });

/** The number of samples a conditioning is for. */
export function batchOf(c: Conditioning): number {
  switch (c.kind) {
    case "none":
      return c.batch;
    case "class":
      return c.labels.length;
    case "text":
      return c.embeds.shape[0] ?? 0;
  }
}

/** Concatenates two tensors along the batch axis (their other axes must agree). */
function cat<D extends "float32">(a: HostTensor<D>, b: HostTensor<D>, what: string): HostTensor<D> {
  if (a.shape.length !== b.shape.length || a.shape.slice(1).some((d, i) => d !== b.shape[i + 1])) {
    throw new Error(
      `cannot batch ${what} of shapes ${formatShape(a.shape)} and ${formatShape(b.shape)} together: all but the first axis must agree`,
    );
  }
  const data = new Float32Array(a.size + b.size);
  data.set(a.data as Float32Array);
  data.set(b.data as Float32Array, a.size);
  return new HostTensor(data, [a.shape[0]! + b.shape[0]!, ...a.shape.slice(1)]) as HostTensor<D>;
}

function catControl(a?: ControlInput, b?: ControlInput): ControlInput | undefined {
  if (!a && !b) return undefined;
  if (!a || !b) throw new Error("cannot batch a conditioning with a control image with one without");
  if (!!a.guessMode !== !!b.guessMode)
    throw new Error("cannot batch control images in guess mode with control images outside it");
  const image = cat(a.image, b.image, "control images");
  const guess = a.guessMode ? { guessMode: true } : {};
  if (typeof a.scale === "number" && a.scale === b.scale) return { image, scale: a.scale, ...guess };
  const na = a.image.shape[0]!;
  const nb = b.image.shape[0]!;
  return { image, scale: [...controlScales(a, na), ...controlScales(b, nb)], ...guess };
}

/** [a | b] along the batch axis: both must be of one kind (and carry the same optional parts). */
export function concatConditions(a: Conditioning, b: Conditioning): Conditioning {
  if (a.kind !== b.kind) throw new Error(`cannot batch a "${a.kind}" conditioning with a "${b.kind}" one`);
  const control = catControl(a.control, b.control);
  const withControl = control ? { control } : {};
  if (a.kind === "none" && b.kind === "none")
    return { kind: "none", batch: a.batch + b.batch, ...withControl };
  if (a.kind === "class" && b.kind === "class") {
    return { kind: "class", labels: [...a.labels, ...b.labels], ...withControl };
  }
  if (a.kind === "text" && b.kind === "text") {
    if (!!a.mask !== !!b.mask || !!a.pooled !== !!b.pooled) {
      throw new Error("cannot batch text conditionings where only one has a mask or a pooled vector");
    }
    return {
      kind: "text",
      embeds: cat(a.embeds, b.embeds, "text embeddings"),
      ...(a.mask && b.mask ? { mask: cat(a.mask, b.mask, "attention masks") } : {}),
      ...(a.pooled && b.pooled ? { pooled: cat(a.pooled, b.pooled, "pooled text vectors") } : {}),
      ...withControl,
    };
  }
  throw new Error("unreachable");
}
