/**
 * The folders of transformers' CLIP text encoders: reading (a text_encoder folder, a pipeline folder's
 * text_encoder/, an old checkpoint with its int64 `position_ids` buffer, a full CLIPModel's text tower)
 * and writing (config.json + model.safetensors as transformers lays them out, F32, F16 or BF16), and
 * building a model's parts from a config (transformers' initialisers) or from given weights.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { SessionOptions } from "../../runtime/options.ts";
import { initParams, type ParamSpec, type Params } from "../../tensor/params.ts";
import { Rng } from "../../tensor/rng.ts";
import {
  CONFIG_NAME,
  checkModelDir,
  checkWeights,
  parseConfigAt,
  readConfigJson,
  readWeights,
  writePretrained,
} from "../pretrained.ts";
import { clipTextParamSpecs } from "./clip-text.ts";
import {
  type ClipTextArchitecture,
  type ClipTextConfig,
  type ClipTextConfigFile,
  clipTextConfigToJson,
  parseClipTextConfig,
  resolveClipTextConfig,
  type TransformersConfig,
} from "./clip-text-config.ts";

/** transformers' file stem of the weights (model.safetensors). */
const WEIGHTS_STEM = "model";
/** The pipeline subfolder tried when a folder has no config.json of its own. */
const COMPONENT = "text_encoder";

export interface ClipTextModelOptions {
  /** ONNX Runtime options for the compiled graphs (threads, execution providers). */
  readonly session?: SessionOptions;
}

export interface ClipTextFromPretrainedOptions extends ClipTextModelOptions {
  /** The subfolder of a pipeline folder (default: the folder itself, else its text_encoder/). */
  readonly subfolder?: string;
  /** Read model.<variant>.safetensors (e.g. "fp16"). */
  readonly variant?: string;
}

export interface ClipTextFromConfigOptions extends ClipTextModelOptions {
  /** Seed of the initial weights (default 0). */
  readonly seed?: number;
}

export interface ClipTextSaveOptions {
  /** The stored dtype of the weights (default "float32"); config.json's torch_dtype says which. */
  readonly dtype?: "float32" | "float16" | "bfloat16";
  /** Writes model.<variant>.safetensors (e.g. "fp16"). */
  readonly variant?: string;
}

/** What a model is made of. */
export interface ClipTextParts {
  readonly file: ClipTextConfigFile;
  readonly params: Params;
  readonly session: SessionOptions;
}

export const withProjection = (cls: ClipTextArchitecture): boolean => cls === "CLIPTextModelWithProjection";

export function initParts(
  cls: ClipTextArchitecture,
  config: TransformersConfig | Partial<ClipTextConfig>,
  opts: ClipTextFromConfigOptions,
): ClipTextParts {
  const file = resolveClipTextConfig(config, cls);
  const specs = clipTextParamSpecs(file.config, { projection: withProjection(cls) });
  return { file, params: initParams(specs, new Rng(opts.seed ?? 0)), session: opts.session ?? {} };
}

export function paramParts(
  cls: ClipTextArchitecture,
  config: TransformersConfig | Partial<ClipTextConfig>,
  params: Params,
  opts: ClipTextModelOptions,
): ClipTextParts {
  const file = resolveClipTextConfig(config, cls);
  const specs = clipTextParamSpecs(file.config, { projection: withProjection(cls) });
  return { file, params: checkWeights(specs, params, `${cls}.fromParams`), session: opts.session ?? {} };
}

/** The folder holding config.json: `dir/subfolder`, `dir`, or a pipeline folder's text_encoder/. */
function modelDirOf(dir: string, cls: ClipTextArchitecture, subfolder?: string): string {
  checkModelDir(dir, cls);
  if (subfolder !== undefined) return join(dir, subfolder);
  if (!existsSync(join(dir, CONFIG_NAME)) && existsSync(join(dir, COMPONENT, CONFIG_NAME))) {
    return join(dir, COMPONENT);
  }
  return dir;
}

export function pretrainedParts(
  cls: ClipTextArchitecture,
  dir: string,
  opts: ClipTextFromPretrainedOptions,
): ClipTextParts {
  const at = modelDirOf(dir, cls, opts.subfolder);
  const json = readConfigJson(at, cls);
  const file = parseConfigAt(at, json, (j) => parseClipTextConfig(j, cls));
  const projection = withProjection(cls);
  // not weights of this class: the position_ids buffer older transformers saved (int64), the
  // projection when only the tower is wanted, and a full CLIPModel's vision tower
  const skipKey = (k: string): boolean =>
    k === "text_model.embeddings.position_ids" ||
    (k === "text_projection.weight" && !projection) ||
    (file.fromFullClip && !k.startsWith("text_model.") && k !== "text_projection.weight");
  try {
    const specs = clipTextParamSpecs(file.config, { projection });
    const params = readWeights(at, cls, specs, {
      stem: WEIGHTS_STEM,
      skipKey,
      ...(opts.variant ? { variant: opts.variant } : {}),
    });
    return { file, params, session: opts.session ?? {} };
  } catch (e) {
    const msg = (e as Error).message;
    if (
      projection &&
      file.architecture === "CLIPTextModel" &&
      msg.includes('missing "text_projection.weight"')
    ) {
      throw new Error(
        `${msg} (config.json names CLIPTextModel, which has no projection: load it with CLIPTextModel)`,
      );
    }
    throw e;
  }
}

/** A class bound to a config without weights: what a training run needs to write and read its folders. */
export interface ClipTextDescription {
  readonly className: ClipTextArchitecture;
  readonly config: ClipTextConfig;
  /** The parameters (names, shapes, transformers' initialisers). */
  readonly specs: readonly ParamSpec[];
  /** Writes config.json and model.safetensors for these weights (unprefixed names). */
  write(dir: string, params: Params, opts?: ClipTextSaveOptions): void;
  /** Reads the weights of a folder `write` made (checked against the config); errors name the file. */
  read(dir: string, opts?: { readonly variant?: string }): Params;
}

export function describeClipText(
  cls: ClipTextArchitecture,
  config: TransformersConfig | Partial<ClipTextConfig>,
): ClipTextDescription {
  const file = resolveClipTextConfig(config, cls);
  const specs = clipTextParamSpecs(file.config, { projection: withProjection(cls) });
  return {
    className: cls,
    config: file.config,
    specs,
    write: (dir, params, opts = {}) => writeClipText(dir, cls, file, params, opts),
    read: (dir, opts = {}) =>
      readWeights(dir, cls, specs, {
        stem: WEIGHTS_STEM,
        skipKey: (k) => k === "text_model.embeddings.position_ids",
        ...(opts.variant ? { variant: opts.variant } : {}),
      }),
  };
}

export function writeClipText(
  dir: string,
  cls: ClipTextArchitecture,
  file: ClipTextConfigFile,
  params: Params,
  opts: ClipTextSaveOptions,
): void {
  const dtype = opts.dtype ?? "float32";
  const stored = ({ float32: "F32", float16: "F16", bfloat16: "BF16" } as const)[dtype];
  if (!stored) {
    throw new Error(
      `${cls}.savePretrained: dtype ${JSON.stringify(dtype)}; use "float32", "float16" or "bfloat16"`,
    );
  }
  const config = clipTextConfigToJson(file.config, {
    architecture: cls,
    torchDtype: dtype,
    extra: file.extra,
  });
  writePretrained(dir, config, params, {
    dtype: stored,
    stem: WEIGHTS_STEM,
    ...(opts.variant ? { variant: opts.variant } : {}),
  });
}
