/**
 * A UNet2DModel folder as diffusers writes it (the generic reader and writer of ../pretrained.ts, with
 * this class's config parser). Old checkpoints' attention keys (query/key/value/proj_attn) are renamed
 * to to_q/to_k/to_v/to_out.0 on load, as diffusers does.
 */

import type { ParamSpec, Params } from "../../tensor/params.ts";
import {
  parseConfigAt,
  readConfigJson,
  readWeights,
  type SaveOptions,
  writePretrained,
} from "../pretrained.ts";
import { type UNet2DConfig, unetConfigFromDiffusers, unetConfigToDiffusers } from "./config.ts";

export { CONFIG_NAME, checkWeights, type SaveOptions, WEIGHTS_NAME } from "../pretrained.ts";

/** Reads and parses `<dir>/config.json`. */
export function readUNetConfig(dir: string): UNet2DConfig {
  return parseConfigAt(dir, readConfigJson(dir, "UNet2DModel", "unet"), unetConfigFromDiffusers);
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

/** Reads `<dir>/diffusion_pytorch_model[.variant].safetensors` (F32, F16, BF16 or F64) for the given specs. */
export function readUNetWeights(dir: string, specs: readonly ParamSpec[], variant?: string): Params {
  return readWeights(dir, "UNet2DModel", specs, {
    ...(variant ? { variant } : {}),
    renameKey: renameLegacyKey,
  });
}

/** Writes config.json and the weights (each file atomically; weights first). */
export function writeUNetPretrained(
  dir: string,
  cfg: UNet2DConfig,
  params: Params,
  opts: SaveOptions = {},
): void {
  writePretrained(dir, unetConfigToDiffusers(cfg), params, opts);
}
