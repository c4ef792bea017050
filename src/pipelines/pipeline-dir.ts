/**
 * Pipeline folders as diffusers lays them out: `model_index.json` names the pipeline class and each
 * component's library and class (`"transformer": ["diffusers", "DiTTransformer2DModel"]`), each
 * component in its own folder (`unet/`, `transformer/`, `scheduler/scheduler_config.json`), plus
 * `diffuse.json` with what diffusers does not record (number of classes, data range, the recommended
 * sampling settings, training and eval figures). Supported now: `DDPMPipeline` (a UNet2DModel),
 * `DiTPipeline` (a DiTTransformer2DModel; its VAE is optional here: pixel-space DiTs have none) and
 * `StableDiffusionPipeline` (tokenizer/, text_encoder/ — transformers' CLIPTokenizer and CLIPTextModel —
 * unet/ a UNet2DConditionModel, vae/ an AutoencoderKL; safety_checker and feature_extractor null) and
 * `StableDiffusionControlNetPipeline` (the same, plus controlnet/ a ControlNetModel that fits the U-Net)
 * and `StableDiffusion3Pipeline` (transformer/ an SD3Transformer2DModel, vae/, one or two CLIP text
 * encoders with projection, T5 null; sd3-pipeline.ts, which also says how diffuse's one-encoder MM-DiT
 * folder differs from what diffusers' pipeline runs).
 * A bare model folder (config.json + weights) loads too, with a default DDPM scheduler.
 * Bundled models live in assets/models/<name>/.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { writeJsonAtomic } from "../io/atomic.ts";
import { checkReadableTree } from "../io/fs-check.ts";
import { DIFFUSERS_VERSION } from "../models/config-fields.ts";
import { releaseControlled } from "../models/controlnet/controlled.ts";
import { checkControlNetFits } from "../models/controlnet/controlnet.ts";
import { ControlNetModel } from "../models/controlnet/model.ts";
import { type AnyDenoiserModel, loadModel } from "../models/load.ts";
import { denoiserClass } from "../models/registry.ts";
import { CLIPTextModel, CLIPTextModelWithProjection } from "../models/text/clip-text-model.ts";
import { CLIPTokenizer } from "../models/text/clip-tokenizer.ts";
import { UNet2DConditionModel } from "../models/unet-cond/model.ts";
import { AutoencoderKL } from "../models/vae/model.ts";
import { loadSd3Text, SD3_OPTIONAL, SD3_PIPELINE } from "./sd3-pipeline.ts";
import type { TextEncoding } from "./text-to-image.ts";

/** Sampling settings a model recommends (the CLI and the studio start from them). */
export interface RecommendedSampling {
  scheduler?: string;
  steps?: number;
  guidance?: number;
}

export interface PipelineInfo {
  /** Real classes (labels 0..numClasses−1). null: unconditional. */
  numClasses: number | null;
  /** The label that means "no class" (classifier-free guidance); default: the model's. */
  nullLabel?: number | null;
  dataset?: string;
  /** What the model's author recommends for sampling. */
  sampling?: RecommendedSampling;
  [key: string]: unknown;
}

export interface LoadedPipeline {
  dir: string;
  /** diffusers' pipeline class (model_index.json `_class_name`). */
  pipelineClass: string;
  /** The denoiser (the unet/ or transformer/ component). */
  denoiser: AnyDenoiserModel;
  schedulerConfig: Record<string, unknown>;
  info: PipelineInfo;
  /** The tokenizer and text encoder of a text-to-image pipeline. */
  text?: TextEncoding;
  /** The VAE of a latent pipeline (the denoiser works on its latents). */
  vae?: AutoencoderKL;
  /** The ControlNet of a StableDiffusionControlNetPipeline (steers the U-Net with a control image). */
  controlnet?: ControlNetModel;
}

/** Releases a pipeline's sessions. */
export function disposePipeline(p: LoadedPipeline): void {
  p.denoiser.dispose();
  p.text?.textEncoder.dispose();
  p.text?.sd3?.second?.textEncoder.dispose();
  p.vae?.dispose();
  p.controlnet?.dispose();
  if (p.denoiser instanceof UNet2DConditionModel) releaseControlled(p.denoiser);
}

export const DEFAULT_SCHEDULER: Readonly<Record<string, unknown>> = {
  _class_name: "DDPMScheduler",
  num_train_timesteps: 1000,
  beta_schedule: "linear",
  beta_start: 0.0001,
  beta_end: 0.02,
  prediction_type: "epsilon",
};

/** The pipelines diffuse reads, and the component folder each keeps its denoiser in. */
const PIPELINES: Readonly<
  Record<string, { denoiser: string; optional: readonly string[]; required?: readonly string[] }>
> = {
  DDPMPipeline: { denoiser: "unet", optional: [] },
  DiTPipeline: { denoiser: "transformer", optional: ["vae"] },
  StableDiffusionPipeline: { denoiser: "unet", optional: [], required: ["vae", "text_encoder", "tokenizer"] },
  StableDiffusionControlNetPipeline: {
    denoiser: "unet",
    optional: [],
    required: ["vae", "text_encoder", "tokenizer", "controlnet"],
  },
  [SD3_PIPELINE]: {
    denoiser: "transformer",
    optional: SD3_OPTIONAL,
    required: ["vae", "text_encoder", "tokenizer"],
  },
};

/** The pipelines with a text encoder and a VAE (text to image in latent space). */
const TEXT_PIPELINES = ["StableDiffusionPipeline", "StableDiffusionControlNetPipeline"];

/** The class each text-to-image component may have (model_index.json: [library, class]). */
const TEXT_COMPONENTS: Readonly<Record<string, readonly string[]>> = {
  vae: ["AutoencoderKL"],
  text_encoder: ["CLIPTextModel", "CLIPTextModelWithProjection"],
  tokenizer: ["CLIPTokenizer", "CLIPTokenizerFast"],
  controlnet: ["ControlNetModel"],
};

/** The package's assets folder (works from src/ and from dist/). */
export function assetsDir(): string {
  return fileURLToPath(new URL("../../assets/", import.meta.url));
}

/** The names of the bundled models (assets/models/<name>/model_index.json). */
export function bundledModels(): string[] {
  const dir = join(assetsDir(), "models");
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((n) => existsSync(join(dir, n, "model_index.json")))
    .sort();
}

/** A bundled model's name when `dir` is its folder (assets/models/<name>), else `dir` itself. */
export function bundledName(dir: string): string {
  return resolve(dirname(dir)) === resolve(assetsDir(), "models") ? basename(dir) : dir;
}

/** A folder path, or the name of a bundled model. */
export function resolveModelDir(nameOrDir: string): string {
  if (existsSync(nameOrDir) && statSync(nameOrDir).isDirectory()) return nameOrDir;
  const bundled = join(assetsDir(), "models", nameOrDir);
  if (/^[a-z0-9-]+$/.test(nameOrDir) && existsSync(join(bundled, "model_index.json"))) return bundled;
  const names = bundledModels();
  throw new Error(
    `model "${nameOrDir}" is neither a folder nor a bundled model` +
      (names.length ? ` (bundled: ${names.join(", ")})` : "") +
      "; pass a model folder (with model_index.json, or config.json and weights) or a run's folder",
  );
}

function readJson(path: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    throw new Error(`${path} is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof v !== "object" || v === null || Array.isArray(v))
    throw new Error(`${path} must hold a JSON object`);
  return v as Record<string, unknown>;
}

/** The denoiser's folder of a pipeline root, from its model_index.json (checked), or the root itself. */
function denoiserDir(root: string): { dir: string; pipelineClass: string; index: Record<string, unknown> } {
  const indexPath = join(root, "model_index.json");
  if (!existsSync(indexPath)) {
    for (const sub of ["unet", "transformer"]) {
      if (existsSync(join(root, sub, "config.json")))
        return { dir: join(root, sub), pipelineClass: "", index: {} };
    }
    if (existsSync(join(root, "config.json"))) return { dir: root, pipelineClass: "", index: {} };
    throw new Error(
      `${root} has no model_index.json, unet/, transformer/ or config.json: not a diffusers model folder`,
    );
  }
  const index = readJson(indexPath);
  const named = index["_class_name"];
  // own keys only ("constructor" is no pipeline), and any value quoted as JSON (an object may not print)
  const layout = typeof named === "string" && Object.hasOwn(PIPELINES, named) ? PIPELINES[named] : undefined;
  if (!layout) {
    throw new Error(
      `${indexPath}: pipeline ${JSON.stringify(named) ?? "(no _class_name)"} is not one diffuse can load; supported: ${Object.keys(PIPELINES).join(", ")}`,
    );
  }
  const cls = named as string;
  for (const [name, value] of Object.entries(index)) {
    if (name.startsWith("_") || value === null || (Array.isArray(value) && value[0] === null)) continue;
    if (name === "scheduler" || name === layout.denoiser || layout.optional.includes(name)) continue;
    if (layout.required?.includes(name)) {
      const allowed = TEXT_COMPONENTS[name]!;
      if (!Array.isArray(value) || !allowed.includes(String(value[1])))
        throw new Error(
          `${indexPath}: "${name}" must be [library, ${allowed.map((a) => `"${a}"`).join(" | ")}], got ${JSON.stringify(value)}`,
        );
      continue;
    }
    if (name === "requires_safety_checker") continue;
    throw new Error(`${indexPath}: component "${name}" is not one a ${cls} folder holds for diffuse`);
  }
  for (const name of layout.required ?? []) {
    const v = index[name];
    if (!Array.isArray(v) || v[0] === null)
      throw new Error(`${indexPath}: a ${cls} needs its "${name}" component; it is missing or null`);
    if (!existsSync(join(root, name)))
      throw new Error(`${root}: the ${name}/ folder is missing (model_index.json lists it)`);
  }
  const entry = index[layout.denoiser];
  if (!Array.isArray(entry) || entry.length !== 2) {
    throw new Error(`${indexPath}: "${layout.denoiser}" must be ["diffusers", "<class name>"]`);
  }
  denoiserClass(entry[1], `${indexPath} component "${layout.denoiser}"`);
  const dir = join(root, layout.denoiser);
  if (!existsSync(join(dir, "config.json")))
    throw new Error(`${root}: the ${layout.denoiser}/ folder is missing`);
  return { dir, pipelineClass: cls, index };
}

export async function loadPipeline(nameOrDir: string): Promise<LoadedPipeline> {
  const dir = resolveModelDir(nameOrDir);
  // an unreadable folder looks empty to existsSync: say that it cannot be read, not that it holds no model
  checkReadableTree(dir, "the model folder", 0);
  // a run folder: use its exported model
  const root = existsSync(join(dir, "model", "model_index.json")) ? join(dir, "model") : dir;
  checkReadableTree(root, "the model folder", 2);
  const { dir: modelDir, pipelineClass, index } = denoiserDir(root);
  const denoiser = await loadModel(modelDir);
  const parts: Pick<LoadedPipeline, "text" | "vae" | "controlnet"> = {};
  if (pipelineClass === SD3_PIPELINE) {
    const raw = existsSync(join(root, "diffuse.json")) ? readJson(join(root, "diffuse.json")) : {};
    try {
      parts.text = await loadSd3Text(root, index, denoiser, raw);
      parts.vae = await AutoencoderKL.fromPretrained(join(root, "vae"));
    } catch (e) {
      denoiser.dispose();
      parts.text?.textEncoder.dispose();
      parts.text?.sd3?.second?.textEncoder.dispose();
      throw e;
    }
  }
  if (TEXT_PIPELINES.includes(pipelineClass)) {
    const te = index["text_encoder"] as [string, string];
    parts.text = {
      tokenizer: CLIPTokenizer.fromPretrained(join(root, "tokenizer")),
      textEncoder:
        te[1] === "CLIPTextModelWithProjection"
          ? await CLIPTextModelWithProjection.fromPretrained(join(root, "text_encoder"))
          : await CLIPTextModel.fromPretrained(join(root, "text_encoder")),
    };
    parts.vae = await AutoencoderKL.fromPretrained(join(root, "vae"));
  }
  if (pipelineClass === "StableDiffusionControlNetPipeline") {
    const cn = await ControlNetModel.fromPretrained(join(root, "controlnet"));
    try {
      if (!(denoiser instanceof UNet2DConditionModel))
        throw new Error(`steers a UNet2DConditionModel, not a ${denoiser.bound.className}`);
      checkControlNetFits(denoiser.typedConfig, cn.config);
    } catch (e) {
      cn.dispose();
      throw new Error(
        `${root}: the ControlNet in controlnet/ does not fit the U-Net: ${(e as Error).message}`,
      );
    }
    parts.controlnet = cn;
  }
  const schedPath = join(root, "scheduler", "scheduler_config.json");
  const schedulerConfig = existsSync(schedPath) ? readJson(schedPath) : { ...DEFAULT_SCHEDULER };
  const infoPath = join(root, "diffuse.json");
  const raw = existsSync(infoPath) ? readJson(infoPath) : {};
  const spec = denoiser.bound.conditioning;
  const dflt = spec.kind === "class" ? spec.numClasses : null;
  const numClasses =
    typeof raw["numClasses"] === "number" || raw["numClasses"] === null
      ? (raw["numClasses"] as number | null)
      : dflt;
  return {
    dir: root,
    pipelineClass: pipelineClass || denoiser.bound.pipelineClass,
    denoiser,
    schedulerConfig,
    info: { ...raw, numClasses },
    ...parts,
  };
}

/**
 * Writes a pipeline folder as diffusers would (atomically per file): model_index.json (DDPMPipeline for
 * a UNet2DModel, DiTPipeline for a DiTTransformer2DModel), the denoiser's folder, scheduler/, and
 * diffuse.json.
 */
export async function savePipeline(
  dir: string,
  model: AnyDenoiserModel,
  schedulerConfig: Record<string, unknown>,
  info: PipelineInfo,
  dtype: "F32" | "F16" = "F32",
): Promise<void> {
  const b = model.bound;
  mkdirSync(join(dir, "scheduler"), { recursive: true });
  await model.savePretrained(join(dir, b.component), { dtype });
  writeJsonAtomic(join(dir, "scheduler", "scheduler_config.json"), schedulerConfig);
  writeJsonAtomic(join(dir, "diffuse.json"), info);
  const index: Record<string, unknown> = {
    _class_name: b.pipelineClass,
    _diffusers_version: DIFFUSERS_VERSION,
    scheduler: ["diffusers", String(schedulerConfig["_class_name"] ?? "DDPMScheduler")],
    [b.component]: ["diffusers", b.className],
  };
  // diffusers' DiTPipeline has a vae component; a pixel-space DiT has none (null, as diffusers writes a missing one)
  if (b.pipelineClass === "DiTPipeline") index["vae"] = [null, null];
  writeJsonAtomic(join(dir, "model_index.json"), index);
}

export interface TextToImageParts {
  unet: AnyDenoiserModel;
  textEncoder: CLIPTextModel | CLIPTextModelWithProjection;
  tokenizer: CLIPTokenizer;
  vae: AutoencoderKL;
  schedulerConfig: Record<string, unknown>;
  info: PipelineInfo;
  dtype?: "F32" | "F16";
  /** With a ControlNet: a StableDiffusionControlNetPipeline folder (controlnet/ beside unet/). */
  controlnet?: ControlNetModel;
}

/**
 * Writes a StableDiffusionPipeline folder as diffusers lays it out: model_index.json, unet/, vae/,
 * text_encoder/ and tokenizer/ (transformers' files), scheduler/, and diffuse.json; with a ControlNet,
 * a StableDiffusionControlNetPipeline folder (controlnet/ too).
 */
export async function saveTextToImagePipeline(dir: string, p: TextToImageParts): Promise<void> {
  const dtype = p.dtype ?? "F32";
  const lower = dtype === "F16" ? "float16" : "float32";
  mkdirSync(join(dir, "scheduler"), { recursive: true });
  await p.unet.savePretrained(join(dir, "unet"), { dtype });
  await p.vae.savePretrained(join(dir, "vae"), { dtype });
  await p.textEncoder.savePretrained(join(dir, "text_encoder"), { dtype: lower });
  p.tokenizer.savePretrained(join(dir, "tokenizer"));
  if (p.controlnet) await p.controlnet.savePretrained(join(dir, "controlnet"), { dtype });
  writeJsonAtomic(join(dir, "scheduler", "scheduler_config.json"), p.schedulerConfig);
  writeJsonAtomic(join(dir, "diffuse.json"), p.info);
  const te =
    p.textEncoder instanceof CLIPTextModelWithProjection ? "CLIPTextModelWithProjection" : "CLIPTextModel";
  writeJsonAtomic(join(dir, "model_index.json"), {
    _class_name: p.controlnet ? "StableDiffusionControlNetPipeline" : "StableDiffusionPipeline",
    _diffusers_version: DIFFUSERS_VERSION,
    ...(p.controlnet ? { controlnet: ["diffusers", "ControlNetModel"] } : {}),
    feature_extractor: [null, null],
    image_encoder: [null, null],
    requires_safety_checker: false,
    safety_checker: [null, null],
    scheduler: ["diffusers", String(p.schedulerConfig["_class_name"] ?? "DDPMScheduler")],
    text_encoder: ["transformers", te],
    tokenizer: ["transformers", "CLIPTokenizer"],
    unet: ["diffusers", "UNet2DConditionModel"],
    vae: ["diffusers", "AutoencoderKL"],
  });
}
