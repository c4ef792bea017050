/**
 * The boundary between diffusers' `config.json` (snake_case keys, as every checkpoint on the hub carries
 * them) and a model's typed, camelCase config: one typed field table per model class, each field with
 * its diffusers key, default and parser. `parseFields` fills defaults and checks values; `fieldsToDiffusers`
 * writes every key back, sorted, with `_class_name` and `_diffusers_version` (STYLE principle 4).
 *
 * Every error is a `ConfigError` that names the class, the key, the bad value and what is allowed.
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
export const int =
  (min: number): Parse<number> =>
  (v, k) =>
    Number.isInteger(v) && (v as number) >= min ? (v as number) : fail(k, v, `an integer ≥ ${min}`);
export const nullable =
  <T>(p: Parse<T>): Parse<T | null> =>
  (v, k) =>
    v === null ? null : p(v, k);
export function oneOf<T extends string>(allowed: readonly T[]): Parse<T> {
  return (v, k) =>
    allowed.includes(v as T) ? (v as T) : fail(k, v, allowed.map((a) => JSON.stringify(a)).join(" or "));
}
export const list =
  <T>(p: Parse<T>): Parse<readonly T[]> =>
  (v, k) => {
    if (!Array.isArray(v) || v.length === 0) fail(k, v, "a non-empty list");
    return v.map((x, i) => p(x, `${k}[${i}]`));
  };

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

/** Parses a diffusers config.json object: defaults filled in, values and their combination checked. */
export function parseFields<C>(schema: ConfigSchema<C>, json: DiffusersConfig): C {
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
    return cfg;
  });
}

/** A typed config from some of its fields (the rest take diffusers' defaults), checked. */
export function configFromFields<C>(schema: ConfigSchema<C>, fields: Partial<C>): C {
  const json: DiffusersConfig = {};
  const names = Object.keys(schema.fields);
  for (const [name, v] of Object.entries(fields)) {
    const f = (schema.fields as Record<string, Field<unknown> | undefined>)[name];
    if (!f) {
      throw new ConfigError(`${schema.className} config has no field "${name}"; known: ${names.join(", ")}`);
    }
    if (v !== undefined) json[f.key] = v;
  }
  return parseFields(schema, json);
}

/** Either form: a diffusers config.json object (snake_case) or typed fields (camelCase). */
export function resolveFields<C>(schema: ConfigSchema<C>, config: DiffusersConfig | Partial<C>): C {
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
    ? configFromFields(schema, config as Partial<C>)
    : parseFields(schema, config as DiffusersConfig);
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
