/**
 * StableDiffusion3Pipeline folders (diffusers 58eb52c; Esser et al. 2024), read and written:
 *
 *   model_index.json                 _class_name "StableDiffusion3Pipeline"
 *   transformer/                     SD3Transformer2DModel (the MM-DiT)
 *   vae/                             AutoencoderKL
 *   text_encoder/, tokenizer/        CLIP-L: CLIPTextModelWithProjection, CLIPTokenizer
 *   text_encoder_2/, tokenizer_2/    CLIP-G: the same classes
 *   text_encoder_3/, tokenizer_3/    T5EncoderModel, T5TokenizerFast — diffuse has no T5: they must be
 *                                    null, and its tokens are zeros, as diffusers does with text_encoder_3=None
 *   scheduler/                       FlowMatchEulerDiscreteScheduler (SD3: shift 3.0)
 *   image_encoder, feature_extractor null (IP-Adapter, not supported)
 *   diffuse.json                     what diffusers does not record: `maxSequenceLength`, the zero T5
 *                                    tokens after the CLIP tokens (diffusers' call argument
 *                                    max_sequence_length; default 256), optional `clipSkip`
 *
 * The conditioning is assembled as encode_prompt does (sd3-text.ts; text-to-image.ts encodePrompts).
 *
 * diffuse's own MM-DiT (train/text-task.ts) is trained with ONE jointly trained CLIP and is written in
 * this layout with `text_encoder_2` and `tokenizer_2` null and `maxSequenceLength: 0` (no zero T5
 * tokens). The difference from diffusers, said plainly: diffusers loads every component of such a
 * folder (`SD3Transformer2DModel`, `AutoencoderKL`, the CLIP and its tokenizer, the scheduler), but its
 * StableDiffusion3Pipeline cannot run it — encode_prompt always runs text_encoder_2. diffuse reads a
 * null second encoder as "one CLIP": its states alone, zero-padded to joint_attention_dim, and its
 * text_embeds as the whole pooled vector.
 */
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { writeJsonAtomic } from "../io/atomic.ts";
import { DIFFUSERS_VERSION } from "../models/config-fields.ts";
import type { AnyDenoiserModel } from "../models/load.ts";
import { CLIPTextModelWithProjection } from "../models/text/clip-text-model.ts";
import { CLIPTokenizer } from "../models/text/clip-tokenizer.ts";
import type { AutoencoderKL } from "../models/vae/model.ts";
import type { PipelineInfo } from "./pipeline-dir.ts";
import { SD3_T5_LENGTH, type Sd3TextLayout } from "./sd3-text.ts";
import type { TextEncoding } from "./text-to-image.ts";

export const SD3_PIPELINE = "StableDiffusion3Pipeline";

/** The components an SD3 folder may hold besides transformer, scheduler, vae, text_encoder and tokenizer (checked by `loadSd3Text`). */
export const SD3_OPTIONAL: readonly string[] = [
  "text_encoder_2",
  "tokenizer_2",
  "text_encoder_3",
  "tokenizer_3",
  "image_encoder",
  "feature_extractor",
];

const isNull = (v: unknown): boolean => v === undefined || v === null || (Array.isArray(v) && v[0] === null);

/** [library, class] of a component in model_index.json, or null for a null one. */
function entryClass(index: Record<string, unknown>, name: string): string | null {
  const v = index[name];
  return isNull(v) ? null : Array.isArray(v) ? String(v[1]) : String(v);
}

/**
 * The text side of an SD3 folder (its model_index.json read as `index`; the transformer already
 * loaded): CLIP-L (and CLIP-G) with their tokenizers, and how their states are assembled. Missing,
 * unsupported or mismatched components are refused with the fix.
 */
export async function loadSd3Text(
  root: string,
  index: Record<string, unknown>,
  transformer: AnyDenoiserModel,
  info: Readonly<Record<string, unknown>>,
): Promise<TextEncoding> {
  const where = join(root, "model_index.json");
  for (const name of ["text_encoder_3", "tokenizer_3"]) {
    const cls = entryClass(index, name);
    if (cls !== null)
      throw new Error(
        `${where}: "${name}" is ${cls}; diffuse has no T5 encoder. It runs SD3 without T5, as diffusers does with text_encoder_3=None (T5's tokens become zeros): set "text_encoder_3" and "tokenizer_3" to [null, null] to use this folder so`,
      );
  }
  for (const name of ["image_encoder", "feature_extractor"]) {
    if (entryClass(index, name) !== null)
      throw new Error(`${where}: "${name}" (IP-Adapter) is not supported; set it to [null, null]`);
  }
  const pair = async (te: string, tok: string) => {
    const [teCls, tokCls] = [entryClass(index, te), entryClass(index, tok)];
    if (teCls === null && tokCls === null) return null;
    if (teCls === null || tokCls === null)
      throw new Error(
        `${where}: "${te}" and "${tok}" go together; one is null and the other ${teCls ?? tokCls}: give both or neither`,
      );
    if (teCls !== "CLIPTextModelWithProjection")
      throw new Error(
        `${where}: "${te}" must be ["transformers", "CLIPTextModelWithProjection"] (SD3 takes its text_embeds), got ${teCls}`,
      );
    if (tokCls !== "CLIPTokenizer" && tokCls !== "CLIPTokenizerFast")
      throw new Error(`${where}: "${tok}" must be ["transformers", "CLIPTokenizer"], got ${tokCls}`);
    for (const sub of [te, tok])
      if (!existsSync(join(root, sub)))
        throw new Error(`${root}: the ${sub}/ folder is missing (model_index.json lists it)`);
    return {
      tokenizer: CLIPTokenizer.fromPretrained(join(root, tok)),
      textEncoder: await CLIPTextModelWithProjection.fromPretrained(join(root, te)),
    };
  };
  const first = await pair("text_encoder", "tokenizer");
  if (!first)
    throw new Error(`${where}: a ${SD3_PIPELINE} needs its "text_encoder" and "tokenizer"; they are null`);
  let second: Awaited<ReturnType<typeof pair>> = null;
  try {
    second = await pair("text_encoder_2", "tokenizer_2");
    const spec = transformer.bound.conditioning;
    if (spec.kind !== "text" || !spec.pooledDim)
      throw new Error(
        `${where}: the transformer (${transformer.bound.className}) takes no pooled text vector`,
      );
    const encoders = second ? [first, second] : [first];
    const widths = encoders.map((e) => e.textEncoder.typedConfig.hiddenSize);
    const pooled = encoders.map((e) => e.textEncoder.typedConfig.projectionDim);
    const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
    if (sum(pooled) !== spec.pooledDim)
      throw new Error(
        `${root}: the text encoders' projection_dim ${pooled.join(" + ")} = ${sum(pooled)} must equal the transformer's pooled_projection_dim ${spec.pooledDim}`,
      );
    if (sum(widths) > spec.dim)
      throw new Error(
        `${root}: the text encoders' hidden_size ${widths.join(" + ")} = ${sum(widths)} is wider than the transformer's joint_attention_dim ${spec.dim}`,
      );
    if (second && second.tokenizer.modelMaxLength !== first.tokenizer.modelMaxLength)
      throw new Error(
        `${root}: tokenizer pads to ${first.tokenizer.modelMaxLength} tokens and tokenizer_2 to ${second.tokenizer.modelMaxLength}; SD3 needs both the same (77)`,
      );
    const seq = info["maxSequenceLength"] ?? SD3_T5_LENGTH;
    if (typeof seq !== "number" || !Number.isInteger(seq) || seq < 0 || seq > 4096)
      throw new Error(
        `${join(root, "diffuse.json")}: maxSequenceLength must be an integer from 0 to 4096 (zero T5 tokens), got ${JSON.stringify(seq)}`,
      );
    const skip = info["clipSkip"] ?? 0;
    if (typeof skip !== "number" || !Number.isInteger(skip) || skip < 0)
      throw new Error(
        `${join(root, "diffuse.json")}: clipSkip must be an integer ≥ 0, got ${JSON.stringify(skip)}`,
      );
    const sd3: Sd3TextLayout = {
      second,
      jointAttentionDim: spec.dim,
      maxSequenceLength: seq,
      ...(skip > 0 ? { clipSkip: skip } : {}),
    };
    return { ...first, sd3 };
  } catch (e) {
    first.textEncoder.dispose();
    second?.textEncoder.dispose();
    throw e;
  }
}

export interface Sd3PipelineParts {
  transformer: AnyDenoiserModel;
  /** CLIP-L, or diffuse's one jointly trained encoder. */
  textEncoder: CLIPTextModelWithProjection;
  tokenizer: CLIPTokenizer;
  /** CLIP-G; absent: the one-encoder layout (text_encoder_2 null). */
  second?: { textEncoder: CLIPTextModelWithProjection; tokenizer: CLIPTokenizer };
  vae: AutoencoderKL;
  schedulerConfig: Record<string, unknown>;
  /** diffuse.json; `maxSequenceLength` (the zero T5 tokens the model was trained with) belongs here. */
  info: PipelineInfo;
  dtype?: "F32" | "F16";
}

/**
 * Writes a StableDiffusion3Pipeline folder as diffusers lays it out: model_index.json (T5 null; the
 * second CLIP null in the one-encoder layout), transformer/, vae/, text_encoder(_2)/ and tokenizer(_2)/
 * (transformers' files), scheduler/, and diffuse.json.
 */
export async function saveSd3Pipeline(dir: string, p: Sd3PipelineParts): Promise<void> {
  if (p.transformer.bound.className !== "SD3Transformer2DModel")
    throw new Error(
      `saveSd3Pipeline: the transformer must be an SD3Transformer2DModel, got ${p.transformer.bound.className}`,
    );
  const dtype = p.dtype ?? "F32";
  const lower = dtype === "F16" ? "float16" : "float32";
  mkdirSync(join(dir, "scheduler"), { recursive: true });
  await p.transformer.savePretrained(join(dir, "transformer"), { dtype });
  await p.vae.savePretrained(join(dir, "vae"), { dtype });
  await p.textEncoder.savePretrained(join(dir, "text_encoder"), { dtype: lower });
  p.tokenizer.savePretrained(join(dir, "tokenizer"));
  if (p.second) {
    await p.second.textEncoder.savePretrained(join(dir, "text_encoder_2"), { dtype: lower });
    p.second.tokenizer.savePretrained(join(dir, "tokenizer_2"));
  }
  writeJsonAtomic(join(dir, "scheduler", "scheduler_config.json"), p.schedulerConfig);
  writeJsonAtomic(join(dir, "diffuse.json"), p.info);
  const clip = ["transformers", "CLIPTextModelWithProjection"];
  const tok = ["transformers", "CLIPTokenizer"];
  writeJsonAtomic(join(dir, "model_index.json"), {
    _class_name: SD3_PIPELINE,
    _diffusers_version: DIFFUSERS_VERSION,
    feature_extractor: [null, null],
    image_encoder: [null, null],
    scheduler: ["diffusers", String(p.schedulerConfig["_class_name"] ?? "FlowMatchEulerDiscreteScheduler")],
    text_encoder: clip,
    text_encoder_2: p.second ? clip : [null, null],
    text_encoder_3: [null, null],
    tokenizer: tok,
    tokenizer_2: p.second ? tok : [null, null],
    tokenizer_3: [null, null],
    transformer: ["diffusers", "SD3Transformer2DModel"],
    vae: ["diffusers", "AutoencoderKL"],
  });
}
