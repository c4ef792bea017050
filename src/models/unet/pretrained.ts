/**
 * A UNet2DModel folder as diffusers writes it: `config.json` and `diffusion_pytorch_model.safetensors`
 * (or `diffusion_pytorch_model.<variant>.safetensors`, e.g. fp16). Reading checks the weights
 * against the config (every name, every shape) and renames the attention keys of old checkpoints
 * (query/key/value/proj_attn → to_q/to_k/to_v/to_out.0), as diffusers does on load.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { writeJsonAtomic } from "../../io/atomic.ts";
import { readSafetensors, writeSafetensors } from "../../io/safetensors.ts";
import { formatShape, type HostTensor, sameShape } from "../../tensor/host.ts";
import type { ParamSpec, Params } from "../../tensor/params.ts";
import { type UNet2DConfig, unetConfigFromDiffusers, unetConfigToDiffusers } from "./config.ts";

export const CONFIG_NAME = "config.json";
export const WEIGHTS_NAME = "diffusion_pytorch_model.safetensors";

/** diffusion_pytorch_model[.variant].safetensors */
export const weightsName = (variant?: string): string =>
  variant ? `diffusion_pytorch_model.${variant}.safetensors` : WEIGHTS_NAME;

function checkDir(dir: string): void {
  if (!existsSync(dir)) throw new Error(`UNet2DModel: no folder at ${dir}`);
  if (!statSync(dir).isDirectory()) {
    throw new Error(
      `UNet2DModel: ${dir} is a file; pass the folder holding ${CONFIG_NAME} and ${WEIGHTS_NAME}`,
    );
  }
}

/** Reads and parses `<dir>/config.json`. */
export function readUNetConfig(dir: string): UNet2DConfig {
  checkDir(dir);
  const path = join(dir, CONFIG_NAME);
  if (!existsSync(path)) {
    const hint = existsSync(join(dir, "unet", CONFIG_NAME))
      ? ` (this looks like a pipeline folder: pass ${join(dir, "unet")})`
      : "";
    throw new Error(`UNet2DModel: ${dir} has no ${CONFIG_NAME}${hint}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    throw new Error(`UNet2DModel: ${path} is not valid JSON: ${(e as Error).message}`);
  }
  try {
    return unetConfigFromDiffusers(json as Record<string, unknown>);
  } catch (e) {
    throw new Error(`${path}: ${(e as Error).message}`);
  }
}

const LEGACY = /^(.*\.attentions\.\d+)\.(query|key|value|proj_attn)\.(weight|bias)$/;
const LEGACY_NAMES: Readonly<Record<string, string>> = {
  query: "to_q",
  key: "to_k",
  value: "to_v",
  proj_attn: "to_out.0",
};

/** The current diffusers name of a weight (old AttentionBlock names → Attention names). */
export function renameLegacyKey(name: string): string {
  const m = LEGACY.exec(name);
  return m ? `${m[1]}.${LEGACY_NAMES[m[2]!]}.${m[3]}` : name;
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

/** Reads `<dir>/diffusion_pytorch_model[.variant].safetensors` (F32, F16, BF16 or F64) for the given specs. */
export function readUNetWeights(dir: string, specs: readonly ParamSpec[], variant?: string): Params {
  checkDir(dir);
  const path = join(dir, weightsName(variant));
  if (!existsSync(path)) {
    const files = readdirSync(dir);
    const alt = files.filter((f) => /^diffusion_pytorch_model\..*safetensors$/.test(f));
    const hint = files.includes("diffusion_pytorch_model.bin")
      ? "; it has diffusion_pytorch_model.bin (PyTorch pickle), which is not read: convert it to safetensors"
      : alt.length > 0
        ? `; it has ${alt.join(", ")} (pass that variant, e.g. { variant: "fp16" })`
        : "";
    throw new Error(`UNet2DModel: ${dir} has no ${weightsName(variant)}${hint}`);
  }
  const file = readSafetensors(path);
  const renamed = new Map<string, HostTensor>();
  for (const [name, t] of file.tensors) {
    const dtype = file.dtypes.get(name);
    if (dtype !== "F32" && dtype !== "F16" && dtype !== "BF16" && dtype !== "F64") {
      throw new Error(`${path}: tensor "${name}" is ${dtype}; weights must be F32, F16, BF16 or F64`);
    }
    renamed.set(renameLegacyKey(name), t);
  }
  return checkWeights(specs, renamed, path);
}

export interface SaveOptions {
  /** Stored dtype of the weights (default F32). */
  readonly dtype?: "F32" | "F16" | "BF16";
  /** Writes diffusion_pytorch_model.<variant>.safetensors (diffusers' convention, e.g. "fp16"). */
  readonly variant?: string;
}

/**
 * Writes config.json and the weights. Each file is replaced atomically (written aside, flushed,
 * renamed): weights first, then the config, so a reader never sees a half-written file. Other
 * files in the folder are left alone.
 */
export function writeUNetPretrained(
  dir: string,
  cfg: UNet2DConfig,
  params: Params,
  opts: SaveOptions = {},
): void {
  mkdirSync(dir, { recursive: true });
  writeSafetensors(join(dir, weightsName(opts.variant)), params, {
    dtype: opts.dtype ?? "F32",
    metadata: { format: "pt" },
  });
  writeJsonAtomic(join(dir, CONFIG_NAME), unetConfigToDiffusers(cfg));
}
