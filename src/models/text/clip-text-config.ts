/**
 * The configuration of transformers' CLIP text encoder (`CLIPTextConfig`, Radford et al. 2021,
 * "Learning Transferable Visual Models From Natural Language Supervision"): a `text_encoder/config.json`
 * ↔ a typed `ClipTextConfig`, with transformers' defaults (v4.45, the ViT-B/32 text tower).
 *
 * transformers' files differ from diffusers' in three ways, handled here rather than in the shared
 * field table (../config-fields.ts, which still does the typed keys, defaults and value checks):
 *   - the class is named by `architectures[0]` ("CLIPTextModel", "CLIPTextModelWithProjection") and the
 *     config kind by `model_type` ("clip_text_model"); a full CLIPModel config (`model_type` "clip")
 *     carries the text tower's config under `text_config`, which is read as transformers does;
 *   - unknown keys are kept (transformers stores them as attributes and writes them back), so `extra`
 *     holds them and `clipTextConfigToJson` writes them again;
 *   - `torch_dtype` (the stored weights' dtype) and `transformers_version` describe the file.
 * Errors name the key, the bad value and what is allowed.
 */
import {
  BOUNDS,
  ConfigError,
  type ConfigSchema,
  configFromFields,
  type DiffusersConfig,
  type FieldTable,
  fail,
  int,
  nullable,
  oneOf,
  parseFields,
  positive,
  probability,
} from "../config-fields.ts";

/** The transformers version whose CLIP text models this implementation was checked against (test/fixtures). */
export const TRANSFORMERS_VERSION = "4.45.0.dev0";

/** transformers' `model_type` of a CLIP text encoder config. */
export const CLIP_TEXT_MODEL_TYPE = "clip_text_model";

/** The two text-encoder classes that read a CLIPTextConfig. */
export const CLIP_TEXT_ARCHITECTURES = ["CLIPTextModel", "CLIPTextModelWithProjection"] as const;
export type ClipTextArchitecture = (typeof CLIP_TEXT_ARCHITECTURES)[number];

/**
 * The MLP's activation (transformers' ACT2FN names): "quick_gelu" x·σ(1.702x) (OpenAI CLIP, SD 1.x),
 * "gelu" the exact x·Φ(x) (OpenCLIP: SD 2.x, SDXL's second encoder), the tanh approximations
 * "gelu_new" / "gelu_pytorch_tanh" / "gelu_fast", "relu", and "silu" / "swish" x·σ(x).
 */
export const CLIP_ACTIVATIONS = [
  "quick_gelu",
  "gelu",
  "gelu_new",
  "gelu_pytorch_tanh",
  "gelu_fast",
  "relu",
  "silu",
  "swish",
] as const;
export type ClipActivation = (typeof CLIP_ACTIVATIONS)[number];

export interface ClipTextConfig {
  vocabSize: number;
  /** The width D of every token state. */
  hiddenSize: number;
  /** The MLP's hidden width. */
  intermediateSize: number;
  /** The width of `text_projection` (CLIPTextModelWithProjection; unused by CLIPTextModel). */
  projectionDim: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  /** The longest token sequence (the rows of the position table). */
  maxPositionEmbeddings: number;
  hiddenAct: ClipActivation;
  layerNormEps: number;
  /** Dropout of the attention probabilities (training only; diffuse trains without it). */
  attentionDropout: number;
  /** Kept for the round trip: transformers initializes the text tower from `initializer_factor` alone. */
  initializerRange: number;
  /** Scales every initial standard deviation (transformers' CLIP `_init_weights`). */
  initializerFactor: number;
  padTokenId: number | null;
  bosTokenId: number | null;
  /**
   * Picks the pooled token: 2 (the value of the original OpenAI configs) means transformers' legacy
   * rule, the position of the largest id (CLIP's <|endoftext|> has the largest id); any other value,
   * the first position holding this id.
   */
  eosTokenId: number;
}

const FIELDS: FieldTable<ClipTextConfig> = {
  vocabSize: { key: "vocab_size", dflt: 49408, parse: int(1, BOUNDS.classes) },
  hiddenSize: { key: "hidden_size", dflt: 512, parse: int(1, BOUNDS.width) },
  intermediateSize: { key: "intermediate_size", dflt: 2048, parse: int(1, 4 * BOUNDS.width) },
  projectionDim: { key: "projection_dim", dflt: 512, parse: int(1, BOUNDS.width) },
  numHiddenLayers: { key: "num_hidden_layers", dflt: 12, parse: int(1, BOUNDS.depth) },
  numAttentionHeads: { key: "num_attention_heads", dflt: 8, parse: int(1, BOUNDS.heads) },
  maxPositionEmbeddings: { key: "max_position_embeddings", dflt: 77, parse: int(1, 1_000_000) },
  hiddenAct: { key: "hidden_act", dflt: "quick_gelu", parse: oneOf(CLIP_ACTIVATIONS) },
  layerNormEps: { key: "layer_norm_eps", dflt: 1e-5, parse: positive },
  attentionDropout: { key: "attention_dropout", dflt: 0, parse: probability },
  initializerRange: { key: "initializer_range", dflt: 0.02, parse: positive },
  initializerFactor: { key: "initializer_factor", dflt: 1, parse: positive },
  padTokenId: { key: "pad_token_id", dflt: 1, parse: nullable(int(0)) },
  bosTokenId: { key: "bos_token_id", dflt: 49406, parse: nullable(int(0)) },
  eosTokenId: { key: "eos_token_id", dflt: 49407, parse: int(0) },
};

function validate(c: ClipTextConfig): void {
  if (c.hiddenSize % c.numAttentionHeads !== 0) {
    fail(
      "num_attention_heads",
      c.numAttentionHeads,
      `a divisor of hidden_size (${c.hiddenSize}): every head gets hidden_size / num_attention_heads channels`,
    );
  }
}

/** The field table as a schema named after the class that reads it (the name goes into the messages). */
export function clipTextSchema(className: ClipTextArchitecture): ConfigSchema<ClipTextConfig> {
  return {
    className,
    fields: FIELDS,
    foreignKeys: ["vision_config", "image_size", "patch_size", "num_channels"],
    foreignOwner: "a CLIP vision tower, which is not supported (pass the text encoder's config)",
    validate,
  };
}

/** A config.json as transformers writes it. */
export type TransformersConfig = Record<string, unknown>;

/** A parsed text_encoder/config.json. */
export interface ClipTextConfigFile {
  readonly config: ClipTextConfig;
  /** `architectures[0]` when the file names one. */
  readonly architecture: ClipTextArchitecture | null;
  /** Keys this implementation does not read, kept as they are and written back (as transformers does). */
  readonly extra: Readonly<Record<string, unknown>>;
  /** True when the file was a full CLIPModel config whose `text_config` was read. */
  readonly fromFullClip: boolean;
}

/** Keys that describe the file rather than the network: read here, written by clipTextConfigToJson. */
const FILE_KEYS = new Set(["architectures", "model_type", "torch_dtype", "transformers_version"]);

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

/**
 * Reads a text encoder config.json object for `className`: the typed config (defaults filled in, values
 * checked), the architecture it names and the keys kept for the round trip.
 */
export function parseClipTextConfig(json: unknown, className: ClipTextArchitecture): ClipTextConfigFile {
  if (!isObject(json)) {
    throw new ConfigError(`${className} config must be a JSON object, got ${JSON.stringify(json)}`);
  }
  const type = json["model_type"];
  if (type === "clip") {
    // transformers' CLIPTextConfig.from_pretrained reads a CLIPModel config's text_config
    const text = json["text_config"];
    if (!isObject(text)) {
      throw new ConfigError(
        `${className} config: a CLIPModel config ("model_type" "clip") needs a "text_config" object, got ${JSON.stringify(text)}`,
      );
    }
    return {
      ...parseClipTextConfig({ ...text, model_type: CLIP_TEXT_MODEL_TYPE }, className),
      fromFullClip: true,
    };
  }
  if (type !== undefined && type !== CLIP_TEXT_MODEL_TYPE) {
    throw new ConfigError(
      `${className} config: "model_type" is ${JSON.stringify(type)}; this loader reads "${CLIP_TEXT_MODEL_TYPE}" configs (or a "clip" config's text_config)`,
    );
  }
  const archs = json["architectures"];
  let architecture: ClipTextArchitecture | null = null;
  if (archs !== undefined && archs !== null) {
    const first = Array.isArray(archs) ? archs[0] : undefined;
    if (!CLIP_TEXT_ARCHITECTURES.includes(first as ClipTextArchitecture)) {
      throw new ConfigError(
        `${className} config: "architectures" is ${JSON.stringify(archs)}; use ["CLIPTextModel"] or ["CLIPTextModelWithProjection"]`,
      );
    }
    architecture = first as ClipTextArchitecture;
  }
  const schema = clipTextSchema(className);
  const config = parseFields(schema, json as DiffusersConfig);
  const known = new Set(Object.values<{ key: string }>(FIELDS).map((f) => f.key));
  const extra: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(json)) if (!known.has(k) && !FILE_KEYS.has(k)) extra[k] = v;
  return { config, architecture, extra, fromFullClip: false };
}

/** A typed config from some of its fields (the rest take transformers' defaults), checked. */
export function clipTextConfig(
  fields: Partial<ClipTextConfig> = {},
  className: ClipTextArchitecture = "CLIPTextModel",
): ClipTextConfig {
  return configFromFields(clipTextSchema(className), fields);
}

/** Either form: a transformers config.json object (snake_case) or typed fields (camelCase). */
export function resolveClipTextConfig(
  config: TransformersConfig | Partial<ClipTextConfig>,
  className: ClipTextArchitecture = "CLIPTextModel",
): ClipTextConfigFile {
  if (!isObject(config)) {
    throw new ConfigError(`${className} config must be an object, got ${JSON.stringify(config)}`);
  }
  const camel = Object.keys(config).filter((k) => /[A-Z]/.test(k) && !k.startsWith("_"));
  if (camel.length === 0) return parseClipTextConfig(config, className);
  const snake = Object.keys(config).find((k) => k.includes("_") && !k.startsWith("_"));
  if (snake) {
    throw new ConfigError(
      `${className} config mixes transformers keys (${snake}) and camelCase fields (${camel[0]}); use one form`,
    );
  }
  return {
    config: clipTextConfig(config as Partial<ClipTextConfig>, className),
    architecture: null,
    extra: {},
    fromFullClip: false,
  };
}

export interface ClipTextJsonOptions {
  readonly architecture: ClipTextArchitecture;
  /** The stored weights' dtype, transformers' name (default "float32"). */
  readonly torchDtype?: string;
  /** Keys kept from the file the model was read from. */
  readonly extra?: Readonly<Record<string, unknown>>;
}

/**
 * The config as transformers writes it: every CLIPTextConfig key, `architectures`, `model_type`,
 * `torch_dtype`, `transformers_version` and the kept keys, sorted (transformers' `sort_keys=True`).
 */
export function clipTextConfigToJson(c: ClipTextConfig, opts: ClipTextJsonOptions): TransformersConfig {
  const entries: [string, unknown][] = Object.entries(opts.extra ?? {});
  for (const name of Object.keys(FIELDS) as (keyof ClipTextConfig)[]) {
    entries.push([FIELDS[name].key, c[name]]);
  }
  entries.push(
    ["architectures", [opts.architecture]],
    ["model_type", CLIP_TEXT_MODEL_TYPE],
    ["torch_dtype", opts.torchDtype ?? "float32"],
    ["transformers_version", TRANSFORMERS_VERSION],
  );
  entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return Object.fromEntries(entries);
}

/** The width of each attention head. */
export const headDim = (c: ClipTextConfig): number => c.hiddenSize / c.numAttentionHeads;
