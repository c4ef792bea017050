/**
 * LoRA for any model object: `await loadLoraWeights(model, path, { scale })` with a model from
 * `fromPretrained` (UNet2DConditionModel, UNet2DModel, DiT, CLIP text encoders) or a loaded pipeline
 * (its denoiser and text encoder each take their part of the file); several adapters at once with
 * their own scales, fused into the weights and unfused (`fuseLora`, `unfuseLora`, `setLoraScale`);
 * `saveLoraWeights` writes diffusers' file.
 *
 *   const unet = await UNet2DConditionModel.fromPretrained(dir);
 *   await loadLoraWeights(unet, "pytorch_lora_weights.safetensors", { scale: 0.8 });
 *   fuseLora(unet);   // optional: merge into the weights
 */
import type { Params } from "../../tensor/params.ts";
import { type Adapter, LoraAdapters, type LoraLayer } from "./adapters.ts";
import {
  type LoraDialect,
  readLoraFile,
  resolveLoraLayers,
  type SaveLoraOptions,
  writeLoraFile,
} from "./lora-files.ts";

export { type Adapter, LoraAdapters, type LoraLayer, type LoraSnapshot } from "./adapters.ts";
export {
  kohyaName,
  type LoraDialect,
  type LoraFile,
  type LoraFileLayer,
  readLoraFile,
  resolveLoraLayers,
  type SaveLoraOptions,
  writeLoraFile,
} from "./lora-files.ts";

/** A model that takes LoRA adapters: its weights, its adapters, and the file component it reads. */
export interface LoraModel {
  readonly params: Params;
  readonly lora: LoraAdapters;
  /** The component prefix of its keys in diffusers' files: "unet", "transformer", "text_encoder". */
  readonly loraComponent: string;
  /** For messages. */
  readonly loraOwner: string;
}

/** A pipeline-like object: a denoiser and, for text-to-image, a text encoder. */
export interface LoraPipeline {
  readonly denoiser: unknown;
  readonly text?: { readonly textEncoder: unknown } | undefined;
}

export interface LoadLoraOptions {
  /** The adapter's scale (diffusers' lora_scale; default 1). */
  readonly scale?: number;
  /** Its name (default: the file's name without extension, made unique). */
  readonly adapterName?: string;
  /** Load what maps and report the rest instead of refusing the file (default false: refuse). */
  readonly allowUnmapped?: boolean;
}

export interface LoraLoadReport {
  readonly adapterName: string;
  readonly dialect: LoraDialect;
  /** Layers loaded, by component. */
  readonly layers: Readonly<Record<string, number>>;
  /** File keys that did not map onto the model (only with allowUnmapped; otherwise they are an error). */
  readonly unmapped: readonly string[];
  /** Layers the file has for components this target lacks (e.g. text_encoder keys loaded into a U-Net alone). */
  readonly otherComponents: Readonly<Record<string, number>>;
}

const isLoraModel = (m: unknown): m is LoraModel =>
  typeof m === "object" && m !== null && "lora" in m && (m as LoraModel).lora instanceof LoraAdapters;

/** An embedding table's layer (class_embedding, token_embedding, position_embedding, embedding_table): a lookup, not a product. */
const EMBEDDING = /(^|[._])(embedding|embedding_table)$/;

/**
 * The linear and convolution layers of a model (weights of rank 2 or 4), by dotted path. Embedding
 * tables, rank 2 too, are left out: an adapter has no product there to join (a convolution named
 * like one, CLIP vision's patch_embedding, stays).
 */
export function loraLayerNames(params: Params): string[] {
  const out: string[] = [];
  for (const [k, v] of params) {
    if (!k.endsWith(".weight") || (v.shape.length !== 2 && v.shape.length !== 4)) continue;
    const layer = k.slice(0, -".weight".length);
    if (v.shape.length === 4 || !EMBEDDING.test(layer)) out.push(layer);
  }
  return out;
}

function listKeys(keys: readonly string[]): string {
  const shown = keys.slice(0, 12).join(", ");
  return keys.length > 12 ? `${shown}, … (${keys.length} in all)` : shown;
}

/**
 * Loads a LoRA file (diffusers/PEFT or kohya) into a model or a pipeline's models as a new adapter.
 * Every key that does not map is reported by name: by default the file is refused (nothing is
 * loaded); with `allowUnmapped` the rest loads and the report lists them. A file with nothing for
 * the model (another architecture) is always refused.
 */
export async function loadLoraWeights(
  target: LoraModel | LoraPipeline,
  path: string,
  opts: LoadLoraOptions = {},
): Promise<LoraLoadReport> {
  const models: LoraModel[] = isLoraModel(target)
    ? [target]
    : [target.denoiser, target.text?.textEncoder].filter((m): m is LoraModel => isLoraModel(m));
  if (models.length === 0)
    throw new Error("loadLoraWeights: the target is not a model or pipeline that takes LoRA adapters");
  const file = readLoraFile(path);
  const owners = models.map((m) => m.loraOwner).join(" + ");
  const single = models.length === 1 ? models[0]! : undefined;
  const plans: { model: LoraModel; layers: Map<string, LoraLayer> }[] = [];
  const unmapped: string[] = [...file.unknown];
  const counts: Record<string, number> = {};
  const claimed = new Set<string>();
  for (const m of models) {
    // a lone model also takes unprefixed keys (PEFT's own files, text-encoder-only files)
    const comps = [m.loraComponent, ...(single ? [""] : [])];
    const layers = new Map<string, LoraLayer>();
    for (const comp of comps) {
      if (!file.components.has(comp)) continue;
      claimed.add(comp);
      const r = resolveLoraLayers(file, comp, loraLayerNames(m.params));
      for (const [k, v] of r.layers) layers.set(k, v);
      unmapped.push(...r.unmapped);
    }
    if (layers.size > 0) {
      plans.push({ model: m, layers });
      counts[m.loraComponent] = layers.size;
    }
  }
  // parts of the file for components this target does not have (e.g. text encoder keys loaded into a U-Net)
  const elsewhere = [...file.components.keys()].filter((c) => !claimed.has(c));
  if (plans.length === 0) {
    const found = [...file.components.entries()].map(
      ([c, l]) => `${l.size} for ${c || "an unnamed component"}`,
    );
    throw new Error(
      `${path}: none of its LoRA layers fit ${owners} (${found.join(", ") || "no LoRA layers"}${unmapped.length ? `; keys that do not map: ${listKeys(unmapped)}` : ""}): the file is for another model or architecture`,
    );
  }
  if (unmapped.length > 0 && !opts.allowUnmapped) {
    throw new Error(
      `${path}: ${unmapped.length} key(s) do not map onto ${owners}: ${listKeys(unmapped)}. Nothing was loaded; pass allowUnmapped to load the other layers anyway`,
    );
  }
  const name = opts.adapterName ?? uniqueName(models, baseName(path));
  for (const p of plans) p.model.lora.add(name, p.layers, opts.scale ?? 1);
  const otherComponents: Record<string, number> = {};
  for (const c of elsewhere) otherComponents[c] = file.components.get(c)!.size;
  return { adapterName: name, dialect: file.dialect, layers: counts, unmapped, otherComponents };
}

function baseName(path: string): string {
  const b = path.split(/[\\/]/).pop() ?? "lora";
  return b.replace(/\.safetensors$/i, "") || "lora";
}

function uniqueName(models: readonly LoraModel[], base: string): string {
  const taken = (n: string) => models.some((m) => m.lora.names.includes(n));
  if (!taken(base)) return base;
  for (let i = 2; ; i++) if (!taken(`${base}_${i}`)) return `${base}_${i}`;
}

/**
 * `FILE[:SCALE]` (the CLI's --lora): a trailing `:<number>` is the scale (default 1); a path that
 * itself ends in a colon and digits can be given as `FILE:1`.
 */
export function parseLoraSpec(spec: string): { path: string; scale: number } {
  const m = /^(.*):([^:\\/]*)$/.exec(spec);
  const path = m?.[1];
  const tail = m?.[2]?.trim();
  if (path && tail !== undefined && tail !== "" && Number.isFinite(Number(tail)))
    return { path, scale: Number(tail) };
  if (path && tail !== undefined && /^[-+.\d]/.test(tail))
    throw new Error(`"${spec}": the scale after ":" must be a number, e.g. lora.safetensors:0.8`);
  if (spec.trim() === "") throw new Error("give a LoRA file, e.g. --lora style.safetensors:0.8");
  return { path: spec, scale: 1 };
}

/** Merges a model's (or pipeline's) adapters into its weights (diffusers' fuse_lora). */
export function fuseLora(target: LoraModel | LoraPipeline, adapterNames?: readonly string[]): void {
  for (const m of modelsOf(target)) {
    const names = adapterNames ? adapterNames.filter((n) => m.lora.names.includes(n)) : undefined;
    m.lora.fuse(names);
  }
}

/** Restores the weights from before fuseLora, bit for bit (the adapters stay loaded, unfused). */
export function unfuseLora(target: LoraModel | LoraPipeline): void {
  for (const m of modelsOf(target)) m.lora.unfuse();
}

/** Sets an adapter's scale (0 turns it off) in a model or in each model of a pipeline that has it. */
export function setLoraScale(target: LoraModel | LoraPipeline, adapterName: string, scale: number): void {
  const ms = modelsOf(target).filter((m) => m.lora.names.includes(adapterName));
  if (ms.length === 0) throw new Error(`setLoraScale: no adapter "${adapterName}" is loaded`);
  for (const m of ms) m.lora.setScale(adapterName, scale);
}

function modelsOf(target: LoraModel | LoraPipeline): LoraModel[] {
  return isLoraModel(target)
    ? [target]
    : [target.denoiser, target.text?.textEncoder].filter((m): m is LoraModel => isLoraModel(m));
}

/** Writes one adapter of a model or pipeline as diffusers' pytorch_lora_weights.safetensors. */
export function saveLoraWeights(
  path: string,
  target: LoraModel | LoraPipeline,
  adapterName: string,
  opts: SaveLoraOptions = {},
): void {
  const parts: Record<string, ReadonlyMap<string, LoraLayer>> = {};
  for (const m of modelsOf(target)) {
    const a: Adapter | undefined = m.lora.get(adapterName);
    if (a) parts[m.loraComponent] = a.layers;
  }
  if (Object.keys(parts).length === 0)
    throw new Error(`saveLoraWeights: no adapter "${adapterName}" is loaded`);
  writeLoraFile(path, parts, opts);
}
