/**
 * What the studio serves: models (bundled ones, folders given on the command line, and the exported
 * model/ of every training run) and training runs (a run folder, or a folder of runs, rescanned on
 * each request so a run started after the server appears). Requests name models and runs by id
 * only; folders never come from a request, so a request cannot reach a path the user did not serve.
 * A text-to-image model (a StableDiffusionPipeline) is described by its images, not its latents: its
 * size is the VAE's output size, and its tokenizer stays in memory so prompts are checked on request.
 * LoRA files (from --lora, and the pytorch_lora_weights.safetensors of every `diffuse finetune` run)
 * are offered by id with the text-to-image models they may fit: a run's with the base it was trained
 * from (its finetune.json), a given file with every text-to-image model (the worker refuses a file
 * that does not fit, with the reason).
 */
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import type { CannyOptions } from "../data/edges.ts";
import { pipelineCanny } from "../eval/control-edges.ts";
import { checkReadableTree } from "../io/fs-check.ts";
import type { CLIPTokenizer } from "../models/text/clip-tokenizer.ts";
import { vaeScaleFactor } from "../models/vae/config.ts";
import { type SamplingOptions, samplingDefaults } from "../pipelines/options.ts";
import {
  bundledModels,
  disposePipeline,
  type LoadedPipeline,
  loadPipeline,
  resolveModelDir,
} from "../pipelines/pipeline-dir.ts";
import { imageSize, takesPrompts } from "../pipelines/run.ts";
import { SCHEDULER_NAMES, schedulerFor } from "../pipelines/scheduler-names.ts";
import { type ModelCost, modelCost } from "./job-cost.ts";

export interface ModelInfo {
  id: string;
  /** Where it comes from: a bundled model, a folder from --model, or a training run's export. */
  source: "bundled" | "folder" | "run";
  dir: string;
  /** Changes when the model's files change (a training run re-exports its model). */
  stamp: string;
  numClasses: number | null;
  /** Whether the model generates from a prompt (a text-to-image pipeline) rather than class labels. */
  prompts: boolean;
  /** A prompt to show in an empty prompt box: diffuse.json's first `promptExamples`, else its `promptTemplate`. */
  promptExample: string | null;
  /** The most tokens a prompt may have (the text encoder's context less its start and end tokens). */
  promptTokens: number | null;
  /** Channels of the images (3 for a VAE's RGB output; the denoiser's for a pixel-space model). */
  channels: number;
  /** The side of the images the model makes by default (a latent model's: its latents' × the VAE's factor). */
  sampleSize: number;
  /** Sizes must be multiples of this (the U-Net halves the image once per extra level, the VAE once per block). */
  sizeMultiple: number;
  /** The model's own scheduler class (its training schedule). */
  schedulerClass: string;
  /** Sampler short names this model can use (a flow-matching model takes flow-euler, dpm++2m and dpm++2m-sde). */
  schedulers: string[];
  /** The options the page starts from: the model's recommended scheduler, steps and guidance, else diffuse's defaults. */
  defaults: SamplingOptions;
  dataset: string | null;
  trainedSteps: number | null;
  /**
   * A few-step student (`diffuse distill`): the method ("lcm", "reflow") and the teacher it was
   * distilled from (a bundled model's name or a folder); its `defaults.steps` is the step count it is
   * made for. Else null.
   */
  distilled: { method: string; teacher: string | null } | null;
  /** A model with a ControlNet takes a control image: the Canny settings its ControlNet was trained with. Else null. */
  control: { canny: CannyOptions } | null;
  /** The ids of the LoRA files offered for this model (text-to-image models only). */
  loras: string[];
}

/** A LoRA file the studio offers: by id, with the base it was trained from when known. */
export interface LoraInfo {
  id: string;
  path: string;
  /** The base pipeline's folder (a finetune run's), or null: any text-to-image model. */
  base: string | null;
}

/** A model that was left out of the list, and why (its config or files were refused). */
export interface ModelProblem {
  id: string;
  dir: string;
  error: string;
}

export interface RunInfo {
  id: string;
  dir: string;
}

export interface CatalogOptions {
  /** Model folders or bundled model names (resolved now: a bad one fails at startup). */
  models?: readonly string[];
  /** Run folders, or folders holding runs. */
  runs?: readonly string[];
  /** Like `runs`, but they may not exist yet (`runs/` before the first `diffuse train`). */
  optionalRuns?: readonly string[];
  /** LoRA files to offer with every text-to-image model (diffusers or kohya .safetensors). */
  loras?: readonly string[];
}

const isRunDir = (dir: string) =>
  existsSync(join(dir, "metrics.jsonl")) ||
  (existsSync(join(dir, "config.json")) && existsSync(join(dir, "checkpoint")));

/** Unique, URL-safe ids from names: "model", "model-2", … */
function uniqueId(name: string, taken: Set<string>): string {
  const base = name.replace(/[^A-Za-z0-9._-]+/g, "-").replace(/^[.-]+/, "") || "model";
  let id = base;
  for (let k = 2; taken.has(id); k++) id = `${base}-${k}`;
  taken.add(id);
  return id;
}

/** Newest modification time and total size of a model folder's files (two levels deep). */
function stampOf(dir: string): string {
  let newest = 0;
  let bytes = 0;
  const visit = (d: string, depth: number) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory() && depth > 0) visit(p, depth - 1);
      else if (e.isFile()) {
        const s = statSync(p);
        newest = Math.max(newest, s.mtimeMs);
        bytes += s.size;
      }
    }
  };
  visit(dir, 1);
  return `${newest}-${bytes}`;
}

export class Catalog {
  private readonly fixed: { id: string; dir: string; source: "bundled" | "folder" }[] = [];
  private readonly runRoots: string[];
  private readonly loraFiles: { id: string; path: string }[] = [];
  private lastProblems: ModelProblem[] = [];
  private readonly infoCache = new Map<
    string,
    {
      stamp: string;
      info: Promise<ModelInfo>;
      tokenizer: Promise<CLIPTokenizer | null>;
      cost: Promise<ModelCost | null>;
    }
  >();

  constructor(opts: CatalogOptions = {}) {
    const taken = new Set<string>();
    const given = opts.models ?? [];
    const names = given.length ? given : bundledModels();
    for (const name of names) {
      const dir = resolve(resolveModelDir(name));
      const bundled = !existsSync(name) && /^[a-z0-9-]+$/.test(name);
      const label = basename(dir) === "model" ? basename(dirname(dir)) : basename(dir);
      this.fixed.push({
        id: uniqueId(bundled ? name : label, taken),
        dir,
        source: bundled ? "bundled" : "folder",
      });
    }
    this.runRoots = (opts.runs ?? []).map((r) => {
      if (!existsSync(r) || !statSync(r).isDirectory()) {
        throw new Error(
          `--runs ${r}: no such folder; pass a training run's folder (from diffuse train --out) or a folder of runs`,
        );
      }
      return resolve(r);
    });
    for (const r of opts.optionalRuns ?? []) this.runRoots.push(resolve(r));
    const loraIds = new Set<string>();
    for (const f of opts.loras ?? []) {
      if (!existsSync(f) || !statSync(f).isFile())
        throw new Error(`--lora ${f}: no such file; pass a LoRA .safetensors file (diffusers or kohya)`);
      this.loraFiles.push({
        id: uniqueId(basename(f).replace(/\.safetensors$/i, ""), loraIds),
        path: resolve(f),
      });
    }
  }

  /** The LoRA files offered: the given ones, and each finetune run's (rescanned). */
  loras(): LoraInfo[] {
    const out: LoraInfo[] = this.loraFiles.map((f) => ({ ...f, base: null }));
    const ids = new Set(out.map((l) => l.id));
    for (const r of this.runs()) {
      const path = join(r.dir, "model", "pytorch_lora_weights.safetensors");
      if (!existsSync(path)) continue;
      let base: string | null = null;
      try {
        const meta = JSON.parse(readFileSync(join(r.dir, "model", "finetune.json"), "utf8")) as {
          base?: unknown;
        };
        if (typeof meta.base === "string") base = resolve(meta.base);
      } catch {
        // no record of the base: offered with every text-to-image model
      }
      out.push({ id: uniqueId(`run-${r.id}`, ids), path, base });
    }
    return out;
  }

  /** The runs, rescanned: each root that is a run, else its subfolders that are. */
  runs(): RunInfo[] {
    const taken = new Set<string>();
    const out: RunInfo[] = [];
    for (const root of this.runRoots) {
      if (!existsSync(root) || !statSync(root).isDirectory()) continue;
      const dirs = isRunDir(root)
        ? [root]
        : readdirSync(root, { withFileTypes: true })
            .filter((e) => e.isDirectory())
            .map((e) => join(root, e.name))
            .filter(isRunDir)
            .sort();
      for (const dir of dirs) out.push({ id: uniqueId(basename(dir), taken), dir });
    }
    return out;
  }

  run(id: string): RunInfo | undefined {
    return this.runs().find((r) => r.id === id);
  }

  /** Every model that loads; models that fail to load (a run mid-export, a refused config) are left out: see `problems()`. */
  async models(): Promise<ModelInfo[]> {
    const candidates: { id: string; dir: string; source: ModelInfo["source"] }[] = [...this.fixed];
    const ids = new Set(this.fixed.map((m) => m.id));
    for (const r of this.runs()) {
      if (existsSync(join(r.dir, "model", "model_index.json"))) {
        candidates.push({ id: uniqueId(`run-${r.id}`, ids), dir: join(r.dir, "model"), source: "run" });
      }
    }
    const settled = await Promise.allSettled(candidates.map(async (c) => this.info(c.id, c.dir, c.source)));
    this.lastProblems = settled.flatMap((s, i) => {
      if (s.status === "fulfilled") return [];
      const { id, dir } = candidates[i]!;
      return [{ id, dir, error: String((s.reason as Error)?.message ?? s.reason).split("\n")[0]! }];
    });
    const loras = this.loras();
    return settled.flatMap((s) => {
      if (s.status !== "fulfilled") return [];
      const m = s.value;
      const fit = m.prompts ? loras.filter((l) => l.base === null || l.base === resolve(m.dir)) : [];
      return [{ ...m, loras: fit.map((l) => l.id) }];
    });
  }

  /** The models the last `models()` left out, each with the first line of its error. */
  problems(): ModelProblem[] {
    return [...this.lastProblems];
  }

  async model(id: string): Promise<ModelInfo | undefined> {
    return (await this.models()).find((m) => m.id === id);
  }

  /**
   * The tokenizer of a text-to-image model as listed by models() (null for a label model), to check
   * prompts before a job is queued; undefined when the model's files changed since it was listed.
   */
  async tokenizer(model: ModelInfo): Promise<CLIPTokenizer | null | undefined> {
    const hit = this.infoCache.get(model.dir);
    return hit && hit.stamp === model.stamp ? hit.tokenizer : undefined;
  }

  /**
   * What a job's cost is estimated from (job-cost.ts: the model's configs and weight sizes), for a
   * model as listed by models(); undefined when the model's files changed since it was listed.
   */
  async cost(model: ModelInfo): Promise<ModelCost | null | undefined> {
    const hit = this.infoCache.get(model.dir);
    return hit && hit.stamp === model.stamp ? hit.cost : undefined;
  }

  /** A model's metadata, read once per version of its files (the weights are loaded, then dropped). */
  private info(id: string, dir: string, source: ModelInfo["source"]): Promise<ModelInfo> {
    checkReadableTree(dir, "the model folder", 2);
    const stamp = stampOf(dir);
    const hit = this.infoCache.get(dir);
    if (hit && hit.stamp === stamp) return hit.info.then((m) => ({ ...m, id }));
    const loaded = loadPipeline(dir);
    const info = (async (): Promise<ModelInfo> => {
      const pipe = await loaded;
      try {
        return describeModel(pipe, { id, source, dir, stamp });
      } finally {
        disposePipeline(pipe);
      }
    })();
    const tokenizer = loaded.then(
      (p) => p.text?.tokenizer ?? null,
      () => null,
    );
    const cost = loaded.then(modelCost, () => null);
    info.catch(() => this.infoCache.delete(dir));
    this.infoCache.set(dir, { stamp, info, tokenizer, cost });
    return info;
  }
}

/** What the page and the validation need to know of a loaded pipeline. */
function describeModel(
  pipe: LoadedPipeline,
  where: Pick<ModelInfo, "id" | "source" | "dir" | "stamp">,
): ModelInfo {
  const geo = pipe.denoiser.bound.geometry;
  const schedulers = SCHEDULER_NAMES.filter((name) => {
    try {
      schedulerFor({ name }, pipe.schedulerConfig);
      return true;
    } catch {
      return false;
    }
  });
  const factor = pipe.vae ? vaeScaleFactor(pipe.vae.config) : 1;
  const trained = pipe.info["trainedSteps"];
  const from = pipe.info["distilledFrom"] as { method?: unknown; teacher?: unknown } | undefined;
  const tokenizer = pipe.text?.tokenizer;
  return {
    ...where,
    numClasses: takesPrompts(pipe) ? null : pipe.info.numClasses,
    prompts: takesPrompts(pipe),
    promptExample: tokenizer ? promptExample(pipe.info) : null,
    promptTokens: tokenizer ? tokenizer.modelMaxLength - 2 : null,
    channels: pipe.vae ? pipe.vae.config.outChannels : geo.inChannels,
    sampleSize: imageSize(pipe),
    sizeMultiple: geo.multipleOf * factor,
    schedulerClass: String(pipe.schedulerConfig["_class_name"] ?? "DDPMScheduler"),
    schedulers,
    defaults: samplingDefaults(pipe),
    dataset: typeof pipe.info.dataset === "string" ? pipe.info.dataset : null,
    trainedSteps: typeof trained === "number" ? trained : null,
    distilled:
      from && typeof from === "object" && typeof from.method === "string"
        ? { method: from.method, teacher: typeof from.teacher === "string" ? from.teacher : null }
        : null,
    control: pipe.controlnet ? { canny: pipelineCanny(pipe) } : null,
    loras: [],
  };
}

/** diffuse.json's first prompt example, else its prompt template, else null. */
function promptExample(info: LoadedPipeline["info"]): string | null {
  const examples = info["promptExamples"];
  if (Array.isArray(examples) && typeof examples[0] === "string" && examples[0].trim() !== "")
    return examples[0];
  const template = info["promptTemplate"];
  return typeof template === "string" && template.trim() !== "" ? template : null;
}
