/**
 * Model folders as diffusers lays out a pipeline: `model_index.json`, `unet/` (config.json +
 * diffusion_pytorch_model.safetensors) and `scheduler/scheduler_config.json`, plus `diffuse.json`
 * with what diffusers does not record (number of classes, data range, training and eval figures).
 * A bare UNet folder (config.json + weights) loads too, with a default DDPM scheduler.
 * Bundled models live in assets/models/<name>/.
 */
import { existsSync, mkdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { writeJsonAtomic } from "../io/atomic.ts";
import { classConditioning } from "../models/unet/config.ts";
import { UNet2DModel } from "../models/unet/model.ts";

export interface PipelineInfo {
  /** Real classes (labels 0..numClasses−1); the label numClasses is "no class" (CFG). null: unconditional. */
  numClasses: number | null;
  dataset?: string;
  [key: string]: unknown;
}

export interface LoadedPipeline {
  dir: string;
  unet: UNet2DModel;
  schedulerConfig: Record<string, unknown>;
  info: PipelineInfo;
}

export const DEFAULT_SCHEDULER: Readonly<Record<string, unknown>> = {
  _class_name: "DDPMScheduler",
  num_train_timesteps: 1000,
  beta_schedule: "linear",
  beta_start: 0.0001,
  beta_end: 0.02,
  prediction_type: "epsilon",
};

/** The package's assets folder (works from src/ and from dist/). */
export function assetsDir(): string {
  return fileURLToPath(new URL("../../assets/", import.meta.url));
}

export function bundledModels(): string[] {
  const dir = join(assetsDir(), "models");
  if (!existsSync(dir)) return [];
  return ["mnist"].filter((n) => existsSync(join(dir, n, "model_index.json")));
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
      "; pass a model folder (with unet/ and scheduler/, or config.json and weights) or a run's model/ folder",
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

export async function loadPipeline(nameOrDir: string): Promise<LoadedPipeline> {
  const dir = resolveModelDir(nameOrDir);
  // a run folder: use its exported model
  const root = existsSync(join(dir, "model", "model_index.json")) ? join(dir, "model") : dir;
  const unetDir = existsSync(join(root, "unet")) ? join(root, "unet") : root;
  if (!existsSync(join(unetDir, "config.json"))) {
    throw new Error(`${root} has no unet/config.json or config.json: not a diffusers model folder`);
  }
  const unet = await UNet2DModel.fromPretrained(unetDir);
  const schedPath = join(root, "scheduler", "scheduler_config.json");
  const schedulerConfig = existsSync(schedPath) ? readJson(schedPath) : { ...DEFAULT_SCHEDULER };
  const infoPath = join(root, "diffuse.json");
  const raw = existsSync(infoPath) ? readJson(infoPath) : {};
  const table = classConditioning(unet.typedConfig) === "table";
  const embeds = unet.typedConfig.numClassEmbeds;
  const numClasses =
    typeof raw["numClasses"] === "number"
      ? (raw["numClasses"] as number)
      : table && embeds !== null
        ? embeds - 1
        : null;
  return { dir: root, unet, schedulerConfig, info: { ...raw, numClasses } };
}

/** Writes a pipeline folder (atomically per file): model_index.json, unet/, scheduler/, diffuse.json. */
export async function savePipeline(
  dir: string,
  unet: UNet2DModel,
  schedulerConfig: Record<string, unknown>,
  info: PipelineInfo,
  dtype: "F32" | "F16" = "F32",
): Promise<void> {
  mkdirSync(join(dir, "scheduler"), { recursive: true });
  await unet.savePretrained(join(dir, "unet"), { dtype });
  writeJsonAtomic(join(dir, "scheduler", "scheduler_config.json"), schedulerConfig);
  writeJsonAtomic(join(dir, "diffuse.json"), info);
  writeJsonAtomic(join(dir, "model_index.json"), {
    _class_name: "DDPMPipeline",
    _diffusers_version: "0.40.0",
    scheduler: ["diffusers", String(schedulerConfig["_class_name"] ?? "DDPMScheduler")],
    unet: ["diffusers", "UNet2DModel"],
  });
}
