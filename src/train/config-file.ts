/**
 * A run config as a file and as flags: reading the JSON file (errors name the file) and
 * `--set KEY=VALUE` overrides of single fields, checked against the fields a config may set (the
 * sections' own, the model's diffusers keys) so a typo is refused with the nearest names. The config's
 * meaning and defaults are config.ts's.
 */
import { readFileSync } from "node:fs";
import { denoiserClass } from "../models/registry.ts";
import { DEFAULTS } from "./config.ts";
import { CONTROLNET_DEFAULTS, FINETUNE_DEFAULTS } from "./config-adapt.ts";
import { ConfigFieldError, isObj, type Json } from "./config-check.ts";

/** Reads a config file; errors name the file. */
export function readConfigFile(path: string): Json {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch {
    throw new ConfigFieldError(`cannot read config file ${path}: does it exist? (pass --config <file.json>)`);
  }
  try {
    const v: unknown = JSON.parse(text);
    if (!isObj(v)) throw new Error("not an object");
    return v;
  } catch (e) {
    throw new ConfigFieldError(`config file ${path} is not a JSON object: ${(e as Error).message}`);
  }
}

/** Names that reach a JavaScript object's prototype instead of one of its fields. */
const PROTOTYPE_KEYS: readonly string[] = ["__proto__", "constructor", "prototype"];

/**
 * The fields `--set` may name, by section: a list, or null for a section whose keys are free (a
 * scheduler's or a text encoder's diffusers config, checked where it is read).
 */
export type SettableFields = Readonly<Record<string, readonly string[] | null>>;

/** The diffusers keys of a denoiser config's class (null when the class is unknown: resolveConfig says so). */
function modelKeys(model: unknown): readonly string[] | null {
  const cls = isObj(model) ? (model["_class_name"] ?? "UNet2DModel") : "UNet2DModel";
  try {
    return Object.keys(denoiserClass(cls).parse({}).config);
  } catch {
    return null;
  }
}

/** What `--set` may name in a denoiser run's config (pixel space or text to image). */
export function settableFields(raw: Json): SettableFields {
  return {
    model: modelKeys(raw["model"]),
    scheduler: null,
    text_encoder: null,
    tokenizer: ["path", "vocab_size"],
    vae: ["path"],
    finetune: ["base", ...Object.keys(FINETUNE_DEFAULTS)],
    controlnet: ["base", ...Object.keys(CONTROLNET_DEFAULTS)],
    data: Object.keys(DEFAULTS.data),
    training: Object.keys(DEFAULTS.training),
    output: Object.keys(DEFAULTS.output),
  };
}

/** Refuses a `--set` path that names no field: SECTION or SECTION.FIELD, both known. */
function checkSettable(path: string, keys: readonly string[], settable: SettableFields): void {
  const [section, field, ...deeper] = keys as [string, ...string[]];
  const sections = Object.keys(settable);
  if (!Object.hasOwn(settable, section)) {
    throw new ConfigFieldError(
      `--set ${path}: "${section}" is not a config section; use one of ${sections.join(", ")}`,
    );
  }
  if (field === undefined) return;
  if (deeper.length > 0) {
    throw new ConfigFieldError(
      `--set ${path}: "${section}.${field}" is one field; set it whole, e.g. --set ${section}.${field}=VALUE (a JSON value)`,
    );
  }
  const fields = settable[section];
  if (fields && !fields.includes(field)) {
    throw new ConfigFieldError(
      `--set ${path}: "${field}" is not a field of ${section}; its fields: ${fields.join(", ")}`,
    );
  }
}

/**
 * Sets "a.b" = value (a JSON literal, or a plain string) in a copy of the object. Names that reach an
 * object's prototype are refused, and with `settable` so is any name that is not a field of its section.
 */
export function setField(cfg: Json, path: string, raw: string, settable?: SettableFields): Json {
  const keys = path.split(".");
  if (keys.some((k) => k === "")) throw new ConfigFieldError(`--set ${path}: empty key in the path`);
  const bad = keys.find((k) => PROTOTYPE_KEYS.includes(k));
  if (bad !== undefined) {
    throw new ConfigFieldError(
      `--set ${path}: "${bad}" is not a config field; name one as SECTION.FIELD, e.g. --set training.lr=3e-4`,
    );
  }
  if (settable) checkSettable(path, keys, settable);
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    value = raw;
  }
  const out = structuredClone(cfg);
  let at: Json = out;
  for (const k of keys.slice(0, -1)) {
    if (!Object.hasOwn(at, k) || !isObj(at[k])) at[k] = {};
    at = at[k] as Json;
  }
  at[keys[keys.length - 1]!] = value;
  return out;
}
