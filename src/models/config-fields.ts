/**
 * The boundary between diffusers' `config.json` (snake_case keys, as every checkpoint on the hub carries
 * them) and a model's typed, camelCase config: one typed field table per model class, each field with
 * its diffusers key, default and parser. `parseFields` fills defaults and checks values; `fieldsToDiffusers`
 * writes every key back, sorted, with `_class_name` and `_diffusers_version` (STYLE principle 4).
 *
 * Every error is a `ConfigError` that names the class, the key, the bad value and what is allowed.
 *
 * Sizes are bounded before anything is built: each size field has a sanity bound (`BOUNDS`, far above
 * any released checkpoint's), and a schema's estimate of the parameters its config implies is held to
 * `ModelLimits.maxParams`. A hostile or mistyped config (`layers_per_block: 1000000`) so fails at once,
 * naming the field and the limit, instead of tracing a network for minutes. Callers with a model
 * that is meant to be larger raise the limit: per call (`parseFields(schema, json, { maxParams })`)
 * or for the process (`setModelLimits`).
 */

/** A config.json object (diffusers keys). */
export type DiffusersConfig = Record<string, unknown>;

/** The diffusers version whose models this implementation was checked against (test/fixtures). */
export const DIFFUSERS_VERSION = "0.40.0.dev0";

export class ConfigError extends Error {
  override name = "ConfigError";
}

/** A value parser: returns the typed value or throws (through `fail`). */
export type Parse<T> = (v: unknown, key: string) => T;

/** A field's bad value, without the class name (added by `parseFields`). */
class FieldError extends Error {}

/** Rejects `v` for `key`: "<key> is <v>; use <allowed>" (the class name is prefixed by parseFields). */
export function fail(key: string, v: unknown, allowed: string): never {
  throw new FieldError(`"${key}" is ${JSON.stringify(v)}; use ${allowed}`);
}

export const bool: Parse<boolean> = (v, k) => (typeof v === "boolean" ? v : fail(k, v, "true or false"));
export const num: Parse<number> = (v, k) =>
  typeof v === "number" && Number.isFinite(v) ? v : fail(k, v, "a number");
export const positive: Parse<number> = (v, k) =>
  typeof v === "number" && Number.isFinite(v) && v > 0 ? v : fail(k, v, "a positive number");
export const probability: Parse<number> = (v, k) =>
  typeof v === "number" && v >= 0 && v < 1 ? v : fail(k, v, "a probability in [0, 1)");
/** An integer ≥ min (and ≤ max, when given: a size field's sanity bound). */
export const int =
  (min: number, max = Number.POSITIVE_INFINITY): Parse<number> =>
  (v, k) =>
    Number.isInteger(v) && (v as number) >= min && (v as number) <= max
      ? (v as number)
      : fail(k, v, `an integer ≥ ${min}${max === Number.POSITIVE_INFINITY ? "" : `, at most ${max}`}`);
export const nullable =
  <T>(p: Parse<T>): Parse<T | null> =>
  (v, k) =>
    v === null ? null : p(v, k);
export function oneOf<T extends string>(allowed: readonly T[]): Parse<T> {
  return (v, k) =>
    allowed.includes(v as T) ? (v as T) : fail(k, v, allowed.map((a) => JSON.stringify(a)).join(" or "));
}
/** A non-empty list of at most `maxLength` entries, each parsed by `p`. */
export const list =
  <T>(p: Parse<T>, maxLength = Number.POSITIVE_INFINITY): Parse<readonly T[]> =>
  (v, k) => {
    if (!Array.isArray(v) || v.length === 0) fail(k, v, "a non-empty list");
    if (v.length > maxLength) fail(k, v, `a list of at most ${maxLength} entries`);
    return v.map((x, i) => p(x, `${k}[${i}]`));
  };

/**
 * Sanity bounds of size fields, far above any released checkpoint's (SD 1.x: 4 levels, widths up to
 * 1280, 2 layers per block; SDXL: 10 transformer layers; DiT-XL: 28 layers of width 1152).
 */
export const BOUNDS = {
  /** Layers in one stack: layers_per_block, transformer_layers_per_block, num_layers. */
  depth: 128,
  /** Resolution levels: entries of block_out_channels and the block type lists. */
  levels: 8,
  /** Channels of a block, hidden and embedding widths. */
  width: 16384,
  /** Image or latent channels: in_channels, out_channels, latent_channels. */
  channels: 1024,
  /** Attention heads, and channels per head. */
  heads: 1024,
  /** The nominal side of the input (pixels or latents): sample_size. */
  sampleSize: 4096,
  /** Rows of a class table (num_class_embeds, num_embeds_ada_norm). */
  classes: 1_000_000,
  /** A patch's or a kernel's side. */
  kernel: 64,
} as const;

/** Limits a whole config is held to before anything is built. */
export interface ModelLimits {
  /** The most parameters a config may imply (estimated from its fields). */
  readonly maxParams: number;
}

/** 4 billion parameters (16 GB of float32 weights): SDXL's U-Net (2.6 billion) fits. */
export const DEFAULT_MODEL_LIMITS: ModelLimits = { maxParams: 4e9 };

let processLimits: ModelLimits = DEFAULT_MODEL_LIMITS;

/** The limits configs are parsed with when a call passes none. */
export function modelLimits(): ModelLimits {
  return processLimits;
}

/** The process's limits with a call's overrides (a model option `limits: { maxParams }`). */
export function limitsWith(overrides: Partial<ModelLimits> = {}): ModelLimits {
  return { ...processLimits, ...overrides };
}

/** Sets the limits for every later parse in this process (fields not given keep theirs); returns the previous limits. */
export function setModelLimits(limits: Partial<ModelLimits>): ModelLimits {
  const previous = processLimits;
  const maxParams = limits.maxParams ?? previous.maxParams;
  if (!(maxParams > 0)) throw new ConfigError(`maxParams must be a positive number, got ${maxParams}`);
  processLimits = { ...previous, maxParams };
  return previous;
}

/** "1.2 billion", "830 million", "52,000". */
function countText(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toPrecision(3)} billion`;
  if (n >= 1e6) return `${(n / 1e6).toPrecision(3)} million`;
  return Math.round(n).toLocaleString("en-US");
}

export interface Field<T> {
  readonly key: string;
  readonly dflt: T;
  readonly parse: Parse<T>;
}

/** Every field of a typed config `C`: the compiler refuses a table that misses one. */
export type FieldTable<C> = { readonly [K in keyof C]: Field<C[K]> };

export interface ConfigSchema<C> {
  readonly className: string;
  readonly fields: FieldTable<C>;
  /** Keys of other classes that change the network: refused rather than silently ignored. */
  readonly foreignKeys?: readonly string[];
  /** Who the foreign keys belong to, for the message (default "another model class"). */
  readonly foreignOwner?: string;
  /** Checks that the fields fit together; may call `fail`. */
  readonly validate?: (c: C) => void;
  /** About how many parameters a (validated) config implies, from its fields alone. */
  readonly estimateParams?: (c: C) => number;
  /** The diffusers keys that decide the size, named when the estimate is over the limit. */
  readonly sizeKeys?: readonly string[];
}

function isObject(v: unknown): v is DiffusersConfig {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Runs `f`, turning a field error into a ConfigError that names the class. */
function inClass<T>(className: string, f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof FieldError) throw new ConfigError(`${className} config: ${e.message}`);
    throw e;
  }
}

/** Refuses a config whose estimated parameter count is over the limit, naming the fields that decide it. */
function checkSize<C>(schema: ConfigSchema<C>, cfg: C, limits: ModelLimits): void {
  if (!schema.estimateParams) return;
  const n = schema.estimateParams(cfg);
  if (n <= limits.maxParams) return;
  const entries = Object.entries(schema.fields) as [string, Field<unknown>][];
  const named = (schema.sizeKeys ?? []).flatMap((key) => {
    const e = entries.find(([, f]) => f.key === key);
    return e ? [`${key} ${JSON.stringify((cfg as Record<string, unknown>)[e[0]])}`] : [];
  });
  throw new ConfigError(
    `${schema.className} config: ${named.length ? named.join(", ") : "its sizes"} imply about ${countText(n)} parameters (${countText(n * 4)} bytes of float32 weights), over the limit of ${countText(limits.maxParams)}; use smaller values, or raise the limit (maxParams) if the model is meant to be this large`,
  );
}

/**
 * Parses a diffusers config.json object: defaults filled in, values and their combination checked,
 * its size held to `limits`.
 */
export function parseFields<C>(
  schema: ConfigSchema<C>,
  json: DiffusersConfig,
  limits: ModelLimits = modelLimits(),
): C {
  const { className, fields } = schema;
  if (!isObject(json)) {
    throw new ConfigError(`${className} config must be a JSON object, got ${JSON.stringify(json)}`);
  }
  const cls = json["_class_name"];
  if (cls !== undefined && cls !== className) {
    throw new ConfigError(
      `${className} config: "_class_name" is ${JSON.stringify(cls)}; this loader reads "${className}" configs only`,
    );
  }
  const foreign = (schema.foreignKeys ?? []).filter((k) => k in json);
  if (foreign.length > 0) {
    throw new ConfigError(
      `${className} config: ${foreign.map((k) => `"${k}"`).join(", ")} belong to ${schema.foreignOwner ?? "another model class"}, which is not supported`,
    );
  }
  return inClass(className, () => {
    const out: Record<string, unknown> = {};
    for (const name of Object.keys(fields) as (keyof C)[]) {
      const f = fields[name] as Field<unknown>;
      out[name as string] = json[f.key] === undefined ? f.dflt : f.parse(json[f.key], f.key);
    }
    const cfg = out as C;
    schema.validate?.(cfg);
    checkSize(schema, cfg, limits);
    return cfg;
  });
}

/** A typed config from some of its fields (the rest take diffusers' defaults), checked. */
export function configFromFields<C>(
  schema: ConfigSchema<C>,
  fields: Partial<C>,
  limits: ModelLimits = modelLimits(),
): C {
  const json: DiffusersConfig = {};
  const names = Object.keys(schema.fields);
  for (const [name, v] of Object.entries(fields)) {
    const f = (schema.fields as Record<string, Field<unknown> | undefined>)[name];
    if (!f) {
      throw new ConfigError(`${schema.className} config has no field "${name}"; known: ${names.join(", ")}`);
    }
    if (v !== undefined) json[f.key] = v;
  }
  return parseFields(schema, json, limits);
}

/** Either form: a diffusers config.json object (snake_case) or typed fields (camelCase). */
export function resolveFields<C>(
  schema: ConfigSchema<C>,
  config: DiffusersConfig | Partial<C>,
  limits: ModelLimits = modelLimits(),
): C {
  if (!isObject(config)) {
    throw new ConfigError(`${schema.className} config must be an object, got ${JSON.stringify(config)}`);
  }
  const keys = Object.keys(config);
  const camel = keys.filter((k) => /[A-Z]/.test(k) && !k.startsWith("_"));
  const snake = keys.filter((k) => k.includes("_") && !k.startsWith("_"));
  if (camel.length > 0 && snake.length > 0) {
    throw new ConfigError(
      `${schema.className} config mixes diffusers keys (${snake[0]}) and camelCase fields (${camel[0]}); use one form`,
    );
  }
  return camel.length > 0
    ? configFromFields(schema, config as Partial<C>, limits)
    : parseFields(schema, config as DiffusersConfig, limits);
}

/** The config as diffusers writes it: every key, sorted, with `_class_name` and `_diffusers_version`. */
export function fieldsToDiffusers<C>(schema: ConfigSchema<C>, cfg: C): DiffusersConfig {
  const out: DiffusersConfig = { _class_name: schema.className, _diffusers_version: DIFFUSERS_VERSION };
  const entries = (Object.keys(schema.fields) as (keyof C)[])
    .map((n) => [schema.fields[n].key, cfg[n]] as const)
    .sort(([a], [b]) => (a < b ? -1 : 1));
  for (const [k, v] of entries) out[k] = Array.isArray(v) ? [...v] : v;
  return out;
}
