/**
 * LoRA files in the two dialects they are exchanged in, read into one form, and written in diffusers'.
 *
 * - diffusers / PEFT (`pytorch_lora_weights.safetensors`, what `save_lora_weights` writes):
 *   `<component>.<module path>.lora_A.weight` [r, in(, k, k)] and `.lora_B.weight` [out, r(, 1, 1)],
 *   with rank and alpha in the `lora_adapter_metadata` JSON (`unet.r`, `unet.lora_alpha`,
 *   `unet.rank_pattern`, `unet.alpha_pattern`); without it alpha = rank, as diffusers assumes. The
 *   older attention-processor names (`….processor.to_q_lora.down.weight`,
 *   `….q_proj.lora_linear_layer.up.weight`) and PEFT's own `base_model.model.` prefix are read too.
 * - kohya-ss / sd-scripts: `lora_unet_<module path with . → _>.lora_down.weight` (= A), `.lora_up.weight`
 *   (= B) and `.alpha` (a scalar), `lora_te_…` (`lora_te1_`/`lora_te2_`) for the text encoders. The
 *   flattened names are matched against the model's own layer names (not guessed back).
 *
 * Nothing is dropped silently: every tensor that is not a LoRA matrix or alpha of a known form is
 * listed in `unknown`, and every layer the model lacks is listed by the loader.
 */
import { readSafetensors, writeSafetensors } from "../../io/safetensors.ts";
import type { HostTensor } from "../../tensor/host.ts";
import type { LoraLayer } from "./adapters.ts";

export type LoraDialect = "diffusers" | "kohya";

/** One layer as found in a file: its id (a dotted module path, or kohya's flattened one) and tensors. */
export interface LoraFileLayer {
  a?: HostTensor<"float32">;
  b?: HostTensor<"float32">;
  alpha?: number;
  /** The file's keys for this layer (for messages). */
  readonly keys: string[];
}

export interface LoraFile {
  readonly path: string;
  readonly dialect: LoraDialect;
  /** By component ("unet", "text_encoder", "text_encoder_2", "transformer"; "" when the keys carry none). */
  readonly components: Map<string, Map<string, LoraFileLayer>>;
  /** Tensors that are not LoRA matrices or alphas of a known form (LoHa, DoRA scales, …). */
  readonly unknown: string[];
  readonly metadata: Record<string, string>;
}

const COMPONENTS = ["unet", "transformer", "text_encoder", "text_encoder_2", "text_encoder_3", "controlnet"];
const KOHYA_COMPONENTS: Record<string, string> = {
  lora_unet: "unet",
  lora_te: "text_encoder",
  lora_te1: "text_encoder",
  lora_te2: "text_encoder_2",
  lora_te3: "text_encoder_3",
};

/** Reads a LoRA safetensors file of either dialect. */
export function readLoraFile(path: string): LoraFile {
  const st = readSafetensors(path);
  const keys = [...st.tensors.keys()];
  const kohya = keys.some((k) => /^lora_(unet|te\d?)_/.test(k));
  const components = new Map<string, Map<string, LoraFileLayer>>();
  const unknown: string[] = [];
  const layerOf = (component: string, id: string): LoraFileLayer => {
    const c = components.get(component) ?? new Map<string, LoraFileLayer>();
    components.set(component, c);
    const l = c.get(id) ?? { keys: [] };
    c.set(id, l);
    return l;
  };
  for (const [key, t] of st.tensors) {
    const parsed = kohya ? parseKohyaKey(key) : parseDiffusersKey(key);
    if (!parsed || t.dtype !== "float32") {
      unknown.push(key);
      continue;
    }
    const layer = layerOf(parsed.component, parsed.id);
    layer.keys.push(key);
    const f32 = t as HostTensor<"float32">;
    if (parsed.part === "alpha") {
      if (f32.data.length !== 1) {
        unknown.push(key);
        continue;
      }
      layer.alpha = f32.data[0]!;
    } else layer[parsed.part] = f32;
  }
  if (components.size === 0 && unknown.length === 0) throw new Error(`${path}: the file holds no tensors`);
  const file: LoraFile = {
    path,
    dialect: kohya ? "kohya" : "diffusers",
    components,
    unknown,
    metadata: st.metadata,
  };
  if (!kohya) applyMetadataAlphas(file);
  return file;
}

interface ParsedKey {
  component: string;
  id: string;
  part: "a" | "b" | "alpha";
}

function parseKohyaKey(key: string): ParsedKey | undefined {
  const m = /^(lora_unet|lora_te\d?)_(.+)\.(lora_down\.weight|lora_up\.weight|alpha)$/.exec(key);
  if (!m) return undefined;
  const part = m[3] === "alpha" ? "alpha" : m[3] === "lora_down.weight" ? "a" : "b";
  return { component: KOHYA_COMPONENTS[m[1]!]!, id: m[2]!, part };
}

function parseDiffusersKey(key: string): ParsedKey | undefined {
  let rest = key;
  let component = "";
  for (const c of COMPONENTS) {
    if (rest.startsWith(`${c}.`)) {
      component = c;
      rest = rest.slice(c.length + 1);
      break;
    }
  }
  if (rest.startsWith("base_model.model.")) rest = rest.slice("base_model.model.".length);
  // diffusers' older attention-processor names → PEFT's
  rest = rest
    .replace(/\.processor\./, ".")
    .replace(/(^|\.)to_(q|k|v)_lora\.(down|up)\.weight$/, "$1to_$2.lora_$3.weight")
    .replace(/(^|\.)to_out_lora\.(down|up)\.weight$/, "$1to_out.0.lora_$2.weight")
    .replace(/\.lora_linear_layer\.(down|up)\.weight$/, ".lora_$1.weight")
    .replace(/\.lora\.(down|up)\.weight$/, ".lora_$1.weight")
    .replace(/\.lora_down\.weight$/, ".lora_A.weight")
    .replace(/\.lora_up\.weight$/, ".lora_B.weight");
  const m = /^(.+)\.lora_(A|B)(?:\.[A-Za-z0-9_-]+)?\.weight$/.exec(rest);
  if (m) return { component, id: m[1]!, part: m[2] === "A" ? "a" : "b" };
  const alpha = /^(.+)\.alpha$/.exec(rest);
  if (alpha) return { component, id: alpha[1]!, part: "alpha" };
  return undefined;
}

/** PEFT's pattern rule: a pattern matches a module whose name ends with it (after a dot or whole). */
function patternValue(patterns: Record<string, unknown>, id: string): number | undefined {
  for (const [p, v] of Object.entries(patterns)) {
    let re: RegExp;
    try {
      re = new RegExp(`(^|\\.)${p}$`);
    } catch {
      continue;
    }
    if (re.test(id) && typeof v === "number") return v;
  }
  return undefined;
}

/** Alphas from `lora_adapter_metadata` (diffusers ≥ 0.33) where the file has no `.alpha` tensors. */
function applyMetadataAlphas(file: LoraFile): void {
  const raw = file.metadata["lora_adapter_metadata"];
  if (!raw) return;
  let meta: Record<string, unknown>;
  try {
    meta = JSON.parse(raw) as Record<string, unknown>;
  } catch {
    throw new Error(
      `${file.path}: its lora_adapter_metadata is not JSON; re-save the LoRA or strip the metadata`,
    );
  }
  for (const [component, layers] of file.components) {
    const pre = component ? `${component}.` : "";
    const alpha = meta[`${pre}lora_alpha`];
    const pattern = meta[`${pre}alpha_pattern`];
    for (const [id, l] of layers) {
      if (l.alpha !== undefined) continue;
      const fromPattern =
        pattern && typeof pattern === "object"
          ? patternValue(pattern as Record<string, unknown>, id)
          : undefined;
      const a = fromPattern ?? (typeof alpha === "number" ? alpha : undefined);
      if (a !== undefined) l.alpha = a;
    }
  }
}

/** kohya's flattened name of a module path. */
export const kohyaName = (layer: string): string => layer.replace(/\./g, "_");

/**
 * The layers of one component, resolved against a model's layer names: the adapters (alpha = rank
 * where the file gives none), and the file's keys for layers the model lacks or that are incomplete.
 */
export function resolveLoraLayers(
  file: LoraFile,
  component: string,
  modelLayers: Iterable<string>,
): { layers: Map<string, LoraLayer>; unmapped: string[] } {
  const known = new Set(modelLayers);
  const byFlat = new Map<string, string>();
  if (file.dialect === "kohya") for (const l of known) byFlat.set(kohyaName(l), l);
  const layers = new Map<string, LoraLayer>();
  const unmapped: string[] = [];
  for (const [id, l] of file.components.get(component) ?? []) {
    const path = file.dialect === "kohya" ? byFlat.get(id) : known.has(id) ? id : undefined;
    if (!path || !l.a || !l.b) {
      unmapped.push(
        ...l.keys.map((k) =>
          path && (!l.a || !l.b) ? `${k} (its ${l.a ? "B" : "A"} matrix is missing)` : k,
        ),
      );
      continue;
    }
    layers.set(path, { a: l.a, b: l.b, alpha: l.alpha ?? l.a.shape[0]! });
  }
  return { layers, unmapped };
}

/** The most common value (ties: the first seen). */
function mode(values: readonly number[]): number {
  const counts = new Map<number, number>();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  let best = values[0]!;
  for (const [v, n] of counts) if (n > counts.get(best)!) best = v;
  return best;
}

export interface SaveLoraOptions {
  /** Stored dtype (default F32). */
  readonly dtype?: "F32" | "F16" | "BF16";
}

/**
 * Writes adapters as diffusers' `pytorch_lora_weights.safetensors`: `<component>.<layer>.lora_A.weight`
 * / `.lora_B.weight`, and `lora_adapter_metadata` (r, lora_alpha, target_modules, rank_pattern,
 * alpha_pattern, use_dora, lora_bias per component, JSON with sorted keys) so that diffusers reads
 * the right alpha. Written atomically.
 */
export function writeLoraFile(
  path: string,
  components: Readonly<Record<string, ReadonlyMap<string, LoraLayer>>>,
  opts: SaveLoraOptions = {},
): void {
  const tensors = new Map<string, HostTensor>();
  const meta: Record<string, unknown> = {};
  for (const [component, layers] of Object.entries(components)) {
    if (layers.size === 0) continue;
    const names = [...layers.keys()];
    const ranks = names.map((n) => layers.get(n)!.a.shape[0]!);
    const alphas = names.map((n) => layers.get(n)!.alpha);
    const r = mode(ranks);
    const alpha = mode(alphas);
    const rankPattern: Record<string, number> = {};
    const alphaPattern: Record<string, number> = {};
    for (const [i, n] of names.entries()) {
      if (ranks[i] !== r) rankPattern[n] = ranks[i]!;
      if (alphas[i] !== alpha) alphaPattern[n] = alphas[i]!;
      const l = layers.get(n)!;
      tensors.set(`${component}.${n}.lora_A.weight`, l.a);
      tensors.set(`${component}.${n}.lora_B.weight`, l.b);
    }
    Object.assign(meta, {
      [`${component}.alpha_pattern`]: alphaPattern,
      [`${component}.lora_alpha`]: alpha,
      [`${component}.lora_bias`]: false,
      [`${component}.r`]: r,
      [`${component}.rank_pattern`]: rankPattern,
      [`${component}.target_modules`]: [...names].sort(),
      [`${component}.use_dora`]: false,
    });
  }
  if (tensors.size === 0) throw new Error(`${path}: no LoRA layers to write`);
  writeSafetensors(path, tensors, {
    dtype: opts.dtype ?? "F32",
    metadata: { format: "pt", lora_adapter_metadata: JSON.stringify(sortKeys(meta), null, 2) },
  });
}

function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === "object") {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(v).sort()) out[k] = sortKeys((v as Record<string, unknown>)[k]);
    return out;
  }
  return v;
}
