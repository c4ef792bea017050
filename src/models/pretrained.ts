/**
 * A diffusers model folder, for any model class: `config.json` and `diffusion_pytorch_model.safetensors`
 * (or `diffusion_pytorch_model.<variant>.safetensors`, e.g. fp16; transformers' `model.safetensors`
 * for text encoders). Reading checks the weights against the parameter specs the config implies —
 * every name, every shape — and errors name the class, the tensor and what was expected. Writing
 * replaces each file atomically: weights first, then the config, so a reader never sees a half-written
 * model.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { writeJsonAtomic } from "../io/atomic.ts";
import { checkReadableTree, fsReason } from "../io/fs-check.ts";
import { readSafetensors, writeSafetensors } from "../io/safetensors.ts";
import { formatShape, type HostTensor, sameShape } from "../tensor/host.ts";
import type { ParamSpec, Params } from "../tensor/params.ts";
import type { DiffusersConfig } from "./config-fields.ts";

export const CONFIG_NAME = "config.json";
export const WEIGHTS_NAME = "diffusion_pytorch_model.safetensors";

/** diffusion_pytorch_model[.variant].safetensors (or another stem, e.g. transformers' "model"). */
export const weightsName = (variant?: string, stem = "diffusion_pytorch_model"): string =>
  variant ? `${stem}.${variant}.safetensors` : `${stem}.safetensors`;

export function checkModelDir(dir: string, className: string): void {
  if (!existsSync(dir)) throw new Error(`${className}: no folder at ${dir}`);
  if (!statSync(dir).isDirectory()) {
    throw new Error(`${className}: ${dir} is a file; pass the folder holding ${CONFIG_NAME} and the weights`);
  }
  // an unreadable folder would otherwise look like one without config.json
  try {
    checkReadableTree(dir, "the model folder", 0);
  } catch (e) {
    throw new Error(`${className}: ${(e as Error).message}`);
  }
}

/** Reads `<dir>/config.json` as a JSON object; `component` names the pipeline subfolder for the hint. */
export function readConfigJson(dir: string, className: string, component?: string): DiffusersConfig {
  checkModelDir(dir, className);
  const path = join(dir, CONFIG_NAME);
  if (!existsSync(path)) {
    const sub = component && existsSync(join(dir, component, CONFIG_NAME)) ? join(dir, component) : null;
    const hint = sub ? ` (this looks like a pipeline folder: pass ${sub})` : "";
    throw new Error(`${className}: ${dir} has no ${CONFIG_NAME}${hint}`);
  }
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new Error(`${className}: cannot read ${path}: ${fsReason(e)}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new Error(`${className}: ${path} is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new Error(`${className}: ${path} must hold a JSON object`);
  }
  return json as DiffusersConfig;
}

/** Parses a config with `parse`, prefixing errors with the file they came from. */
export function parseConfigAt<C>(dir: string, json: DiffusersConfig, parse: (j: DiffusersConfig) => C): C {
  try {
    return parse(json);
  } catch (e) {
    throw new Error(`${join(dir, CONFIG_NAME)}: ${(e as Error).message}`);
  }
}

function list(names: readonly string[]): string {
  const shown = names.slice(0, 5).map((n) => `"${n}"`);
  return names.length > 5 ? `${shown.join(", ")} and ${names.length - 5} more` : shown.join(", ");
}

/** Checks weights against the specs; the message names the tensor and both shapes, or what is missing/extra. */
export function checkWeights(
  specs: readonly ParamSpec[],
  weights: ReadonlyMap<string, HostTensor>,
  where: string,
): Params {
  const missing = specs.filter((s) => !weights.has(s.name)).map((s) => s.name);
  const known = new Set(specs.map((s) => s.name));
  const extra = [...weights.keys()].filter((k) => !known.has(k));
  if (missing.length > 0 || extra.length > 0) {
    const parts = [];
    if (missing.length > 0) parts.push(`missing ${list(missing)}`);
    if (extra.length > 0) parts.push(`unexpected ${list(extra)}`);
    throw new Error(`${where}: the weights do not fit the config: ${parts.join("; ")}`);
  }
  const out: Params = new Map();
  for (const s of specs) {
    const t = weights.get(s.name)!;
    if (!sameShape(t.shape, s.shape)) {
      throw new Error(
        `${where}: tensor "${s.name}" has shape ${formatShape(t.shape)}, but the config needs ${formatShape(s.shape)}`,
      );
    }
    if (t.dtype !== "float32")
      throw new Error(`${where}: tensor "${s.name}" is ${t.dtype}; weights must be floats`);
    out.set(s.name, t as HostTensor<"float32">);
  }
  return out;
}

export interface ReadWeightsOptions {
  /** Read <stem>.<variant>.safetensors (e.g. "fp16"). */
  readonly variant?: string;
  /** The file's stem (default diffusers' "diffusion_pytorch_model"). */
  readonly stem?: string;
  /** Renames a stored key to the current name (old checkpoints). */
  readonly renameKey?: (name: string) => string;
  /** Stored keys that are not weights of this model and are left unread (e.g. an old buffer). */
  readonly skipKey?: (name: string) => boolean;
}

/** Reads `<dir>/<stem>[.variant].safetensors` (F32, F16, BF16 or F64) for the given specs. */
export function readWeights(
  dir: string,
  className: string,
  specs: readonly ParamSpec[],
  opts: ReadWeightsOptions = {},
): Params {
  checkModelDir(dir, className);
  const stem = opts.stem ?? "diffusion_pytorch_model";
  const name = weightsName(opts.variant, stem);
  const path = join(dir, name);
  if (!existsSync(path)) {
    const files = readdirSync(dir);
    const alt = files.filter((f) => f.startsWith(`${stem}.`) && f.endsWith(".safetensors"));
    const hint = files.includes(`${stem}.bin`)
      ? `; it has ${stem}.bin (PyTorch pickle), which is not read: convert it to safetensors`
      : alt.length > 0
        ? `; it has ${alt.join(", ")} (pass that variant, e.g. { variant: "fp16" })`
        : "";
    throw new Error(`${className}: ${dir} has no ${name}${hint}`);
  }
  const file = readSafetensors(path);
  const renamed = new Map<string, HostTensor>();
  for (const [key, t] of file.tensors) {
    if (opts.skipKey?.(key)) continue;
    const dtype = file.dtypes.get(key);
    if (dtype !== "F32" && dtype !== "F16" && dtype !== "BF16" && dtype !== "F64") {
      throw new Error(`${path}: tensor "${key}" is ${dtype}; weights must be F32, F16, BF16 or F64`);
    }
    renamed.set(opts.renameKey ? opts.renameKey(key) : key, t);
  }
  return checkWeights(specs, renamed, `${className} ${path}`);
}

export interface SaveOptions {
  /** Stored dtype of the weights (default F32). */
  readonly dtype?: "F32" | "F16" | "BF16";
  /** Writes <stem>.<variant>.safetensors (diffusers' convention, e.g. "fp16"). */
  readonly variant?: string;
}

/**
 * Writes config.json and the weights, each file replaced atomically (written aside, flushed, renamed):
 * weights first, then the config. Other files in the folder are left alone.
 */
export function writePretrained(
  dir: string,
  config: DiffusersConfig,
  params: Params,
  opts: SaveOptions & { readonly stem?: string } = {},
): void {
  mkdirSync(dir, { recursive: true });
  writeSafetensors(join(dir, weightsName(opts.variant, opts.stem)), params, {
    dtype: opts.dtype ?? "F32",
    metadata: { format: "pt" },
  });
  writeJsonAtomic(join(dir, CONFIG_NAME), config);
}
