/**
 * `diffuse sample`: generates images with a model folder (or a bundled model: `mnist`, `mnist-dit`,
 * `emoji`) and any sampler, with classifier-free guidance — from class labels, or from prompts for a
 * text-to-image model; writes grid.png (generation parameters in its text chunk) and
 * samples.safetensors (images F32 [N,C,H,W] in [0,1]; labels I64 [N], or the prompts in its metadata).
 * A StableDiffusionControlNetPipeline folder takes a control image (--control: an edge map, resized to
 * the model's image size) and its strength (--control-scale, --guess-mode).
 */
import { existsSync, mkdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { writeFileAtomic } from "../io/atomic.ts";
import { checkOutputDir, checkReadableTree } from "../io/fs-check.ts";
import { makeGrid } from "../io/grid.ts";
import { readImage } from "../io/image-decode.ts";
import { encodePng } from "../io/png.ts";
import { writeSafetensors } from "../io/safetensors.ts";
import { loadLoraWeights, parseLoraSpec } from "../models/lora/index.ts";
import {
  CLASS_GUIDANCE,
  checkSamplingOptions,
  parametersText,
  SAMPLING_OPTIONS,
  type SamplingField,
  SamplingOptionError,
  type SamplingOptions,
  samplingDefaults,
} from "../pipelines/options.ts";
import { disposePipeline, type LoadedPipeline, loadPipeline } from "../pipelines/pipeline-dir.ts";
import {
  type ControlRequest,
  controlFromRaster,
  imageSize,
  pipelineGenerate,
  takesControl,
  takesPrompts,
} from "../pipelines/run.ts";
import { SCHEDULER_NAMES, schedulerFor } from "../pipelines/scheduler-names.ts";
import { checkPrompts, PromptError } from "../pipelines/text-to-image.ts";
import { HostTensor } from "../tensor/host.ts";
import { readConfigFile } from "../train/config-file.ts";
import { bool, num, type Parsed, parseFlags, str, UsageError } from "./args.ts";
import { Progress } from "./progress.ts";

/** "from 1 to 1000" for an option of the schema. */
function range(field: SamplingField): string {
  const r = SAMPLING_OPTIONS[field];
  return r.kind === "number" ? `from ${r.min} to ${r.max}` : "";
}

/** The flag that sets each sampling option. */
const FLAG: Record<SamplingField, string> = {
  scheduler: "scheduler",
  karras: "karras",
  steps: "steps",
  guidance: "guidance",
  guidanceRescale: "guidance-rescale",
  eta: "eta",
  seed: "seed",
};

/** The sampling options given as flags, as values of their type (text that is no number stays text, and is refused as such). */
function givenOptions(p: Parsed): Partial<Record<SamplingField, unknown>> {
  const out: Partial<Record<SamplingField, unknown>> = {};
  for (const field of Object.keys(FLAG) as SamplingField[]) {
    const rule = SAMPLING_OPTIONS[field];
    if (rule.kind === "flag") {
      if (bool(p, FLAG[field])) out[field] = true;
      continue;
    }
    const s = str(p, FLAG[field]);
    if (s === undefined) continue;
    out[field] = rule.kind === "number" && s.trim() !== "" && Number.isFinite(Number(s)) ? Number(s) : s;
  }
  return out;
}

const HELP = `usage: diffuse sample [--model DIR|NAME] [flags]

Generates images and writes DIR/grid.png and DIR/samples.safetensors.

flags:
  --model DIR|NAME         a model folder (a run's folder, a diffusers pipeline or model folder) or a bundled model: mnist (a U-Net), mnist-dit (a DiT), mnist-lcm (mnist distilled to 4 steps), emoji (text to image) (default: mnist)
  --scheduler NAME         ${SCHEDULER_NAMES.join(", ")}, or a diffusers class name (default: the model's recommendation, else dpm++2m; flow-euler for a flow-matching model)
  --karras                 Karras sigmas (DPM-Solver++, Euler, Heun)
  --scheduler-config FILE  a diffusers scheduler_config.json instead of --scheduler
  --steps N                sampling steps, ${range("steps")} (default: the model's recommendation, else 20)
  --guidance W             classifier-free guidance scale, ${range("guidance")}; 1 = no guidance (default: the model's
                           recommendation, else ${CLASS_GUIDANCE} for a class-conditional model, 1 for an unconditional one)
  --guidance-rescale PHI   guidance rescale, ${range("guidanceRescale")} (default 0)
  --eta X                  DDIM's eta, ${range("eta")} (default 0)
  --labels L               comma-separated class labels, or "all" (default all)
  --per-label N            images per label (default 8 with "all", else 1)
  --prompt TEXT            what to draw (text-to-image models), e.g. "thumbs up sign, medium skin tone, google style"
  --negative-prompt TEXT   what to steer away from (default: the empty prompt)
  --prompt-file FILE       one prompt per line (blank lines skipped), one image each, in order
  --per-prompt N           images per prompt (default 8 with --prompt, 1 with --prompt-file)
  --lora FILE[:SCALE]      a LoRA file (diffusers or kohya .safetensors) at a scale (default 1); repeat for several
  --control IMAGE          a control image (PNG/JPEG, e.g. an edge map) for a model with a ControlNet; centre-cropped
                           and resized to the model's image size
  --control-scale S        how strongly the control image steers, from 0 (not at all) to 10 (default 1)
  --guess-mode             ControlNet's guess mode: the structure without relying on the prompt
  --seed N                 seed, ${range("seed")} (default 0)
  --batch N                images per forward pass (default 64)
  --out DIR                output folder (default out/)
`;

/** The prompts of --prompt or --prompt-file (checked), or null. */
function promptsOf(p: Parsed): string[] | null {
  const one = str(p, "prompt");
  const file = str(p, "prompt-file");
  if (one !== undefined && file !== undefined)
    throw new UsageError("pass --prompt or --prompt-file, not both");
  try {
    if (one !== undefined) return checkPrompts(one, "--prompt");
    if (file === undefined) return null;
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch {
      throw new UsageError(`--prompt-file: cannot read ${file}: does it exist?`);
    }
    const lines = text.split(/\r?\n/).filter((l) => l.trim() !== "");
    if (lines.length === 0) throw new UsageError(`--prompt-file: ${file} has no prompts (one per line)`);
    return checkPrompts(lines, "--prompt-file line");
  } catch (e) {
    if (e instanceof PromptError) throw new UsageError(e.message);
    throw e;
  }
}

/** What to generate, in order, and how to label it: label jobs and prompt jobs alike. */
interface Job {
  count: number;
  nrow: number;
  labels: number[] | null;
  prompts: string[] | null;
  negativePrompt: string | null;
  slice(
    lo: number,
    hi: number,
  ): { labels?: number[] | number; prompts?: string[]; negativePrompts?: string[] };
  context: { labels?: "all" | readonly number[] | null; extra: Record<string, string | number> };
}

function promptJob(p: Parsed, pipe: LoadedPipeline, prompts: string[] | null): Job {
  if (!prompts)
    throw new UsageError(
      `${pipe.dir} is a text-to-image model: pass --prompt "…" or --prompt-file FILE${typeof pipe.info["promptTemplate"] === "string" ? ` (prompts look like "${pipe.info["promptTemplate"]}")` : ""}`,
    );
  if (str(p, "labels") !== undefined || str(p, "per-label") !== undefined)
    throw new UsageError("this is a text-to-image model: it takes --prompt, not --labels");
  const fromFile = str(p, "prompt-file") !== undefined;
  const per = num(p, "per-prompt", { min: 1, max: 1024, integer: true }) ?? (fromFile ? 1 : 8);
  const negative = str(p, "negative-prompt") ?? null;
  if (negative !== null && typeof negative !== "string")
    throw new UsageError("--negative-prompt must be text");
  // each prompt's images side by side: prompt-major
  const all = prompts.flatMap((q) => Array.from({ length: per }, () => q));
  return {
    count: all.length,
    nrow: fromFile ? Math.min(8, all.length) : per,
    labels: null,
    prompts: all,
    negativePrompt: negative,
    slice: (lo, hi) => ({
      prompts: all.slice(lo, hi),
      ...(negative !== null ? { negativePrompts: all.slice(lo, hi).map(() => negative) } : {}),
    }),
    context: {
      extra: {
        prompt: fromFile ? `${prompts.length} prompts from ${str(p, "prompt-file")}` : prompts[0]!,
        ...(negative !== null ? { negative_prompt: negative } : {}),
        per_prompt: per,
      },
    },
  };
}

function labelJob(p: Parsed, pipe: LoadedPipeline, prompts: string[] | null): Job {
  if (prompts)
    throw new UsageError(`${pipe.dir} is not a text-to-image model: it takes --labels, not prompts`);
  if (str(p, "negative-prompt") !== undefined)
    throw new UsageError("--negative-prompt is for text-to-image models");
  const labelsFlag = str(p, "labels") ?? "all";
  const classes = parseLabels(labelsFlag, pipe.info.numClasses);
  const perLabel =
    num(p, "per-label", { min: 1, max: 1024, integer: true }) ?? (labelsFlag === "all" ? 8 : 1);
  // per-label images laid out label-major within each row: with "all", a row per sample index
  const labels: number[] | null = classes ? Array.from({ length: perLabel }, () => classes).flat() : null;
  return {
    count: labels ? labels.length : perLabel,
    nrow: classes ? classes.length : 8,
    labels,
    prompts: null,
    negativePrompt: null,
    slice: (lo, hi) => ({ labels: labels ? labels.slice(lo, hi) : hi - lo }),
    context: { labels: classes, extra: { per_label: perLabel } },
  };
}

function parseLabels(s: string, numClasses: number | null): number[] | null {
  if (numClasses === null) {
    if (s !== "all") throw new UsageError("this model is unconditional: it takes no --labels");
    return null;
  }
  if (s === "all") return Array.from({ length: numClasses }, (_, i) => i);
  const out = s.split(",").map((x) => x.trim());
  return out.map((x) => {
    const v = Number(x);
    if (x === "" || !Number.isInteger(v) || v < 0 || v >= numClasses) {
      throw new UsageError(`--labels: "${x}" is not a class of this model (0..${numClasses - 1}, or "all")`);
    }
    return v;
  });
}

export async function run(argv: readonly string[]): Promise<void> {
  const p = parseFlags("sample", argv, {
    model: { type: "string" },
    scheduler: { type: "string" },
    karras: { type: "boolean" },
    "scheduler-config": { type: "string" },
    steps: { type: "string" },
    guidance: { type: "string" },
    "guidance-rescale": { type: "string" },
    eta: { type: "string" },
    labels: { type: "string" },
    "per-label": { type: "string" },
    prompt: { type: "string" },
    "negative-prompt": { type: "string" },
    "prompt-file": { type: "string" },
    "per-prompt": { type: "string" },
    lora: { type: "string", multiple: true },
    control: { type: "string" },
    "control-scale": { type: "string" },
    "guess-mode": { type: "boolean" },
    seed: { type: "string" },
    batch: { type: "string" },
    out: { type: "string" },
  });
  if (bool(p, "help")) {
    console.log(HELP);
    return;
  }
  if (p.positionals.length) throw new UsageError(`unexpected argument "${p.positionals[0]}"`);
  // the flags are checked before the model loads; its recommendations fill in the rest
  let given: Partial<SamplingOptions>;
  try {
    given = checkSamplingOptions(givenOptions(p));
  } catch (e) {
    if (e instanceof SamplingOptionError)
      throw new UsageError(`--${FLAG[e.field as SamplingField]}: ${e.message}`);
    throw e;
  }
  const batch = num(p, "batch", { min: 1, max: 4096, integer: true }) ?? 64;
  const outDir = str(p, "out") ?? "out";
  if (str(p, "scheduler") && str(p, "scheduler-config"))
    throw new UsageError("pass --scheduler or --scheduler-config, not both");

  const prompts = promptsOf(p);
  const controlPath = str(p, "control");
  const controlScale = num(p, "control-scale", { min: 0, max: 10 });
  if (controlPath === undefined && (controlScale !== undefined || bool(p, "guess-mode")))
    throw new UsageError("--control-scale and --guess-mode go with --control IMAGE (the control image)");
  const loras = ((p.values["lora"] as string[] | undefined) ?? []).map((s) => {
    try {
      return parseLoraSpec(s);
    } catch (e) {
      throw new UsageError(`--lora: ${(e as Error).message}`);
    }
  });
  try {
    checkOutputDir(outDir, "--out");
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const model = str(p, "model") ?? "mnist";
  // an unreadable folder would otherwise look like one that holds no model
  if (existsSync(model) && statSync(model).isDirectory()) checkReadableTree(model, "the model folder", 3);
  const pipe = await loadPipeline(model);
  try {
    for (const l of loras) {
      try {
        await loadLoraWeights(pipe, l.path, { scale: l.scale });
      } catch (e) {
        throw new UsageError(`--lora ${l.path}: ${(e as Error).message}`);
      }
    }
    const opts: SamplingOptions = { ...samplingDefaults(pipe), ...given };
    const cfgPath = str(p, "scheduler-config");
    const scheduler = cfgPath
      ? schedulerFor({ config: readConfigFile(cfgPath) }, pipe.schedulerConfig)
      : schedulerFor({ name: opts.scheduler, karras: opts.karras }, pipe.schedulerConfig);
    const job = takesPrompts(pipe) ? promptJob(p, pipe, prompts) : labelJob(p, pipe, prompts);
    const total = job.count;
    const size = imageSize(pipe);
    let control: ControlRequest | undefined;
    if (controlPath !== undefined) {
      if (!takesControl(pipe))
        throw new UsageError(
          `--control: ${pipe.dir} is a ${pipe.pipelineClass} without a ControlNet; use a StableDiffusionControlNetPipeline folder (one with controlnet/, as a ControlNet training run exports)`,
        );
      control = {
        image: readControlImage(controlPath, size),
        scale: controlScale ?? 1,
        guessMode: bool(p, "guess-mode"),
      };
    }
    let all: Float32Array | null = null;
    let c = 0;
    const progress = new Progress("sample");
    const chunks = Math.ceil(total / batch);
    const t0 = performance.now();
    for (let k = 0; k < chunks; k++) {
      const lo = k * batch;
      const hi = Math.min(total, lo + batch);
      const imgs = await pipelineGenerate(pipe, scheduler, {
        ...job.slice(lo, hi),
        numClasses: pipe.info.numClasses,
        steps: opts.steps,
        guidance: opts.guidance,
        guidanceRescale: opts.guidanceRescale,
        eta: opts.eta,
        seed: opts.seed + k,
        ...(control ? { control } : {}),
        onStep: ({ i }) => {
          const done = k * opts.steps + i + 1;
          progress.update({
            step: done,
            total: chunks * opts.steps,
            rate: done / ((performance.now() - t0) / 1000),
          });
        },
      });
      c = imgs.shape[1]!;
      all ??= new Float32Array(total * c * size * size);
      all.set(imgs.data, lo * c * size * size);
    }
    progress.done();
    const images = new HostTensor<"float32">(all!, [total, c, size, size]);
    mkdirSync(outDir, { recursive: true });
    const params = parametersText(
      // a --scheduler-config file is named by its class (the file's other settings are not in the text)
      cfgPath ? { ...opts, scheduler: `${String(scheduler.config.className)} (${cfgPath})` } : opts,
      {
        model: pipe.dir,
        ...job.context,
        extra: {
          ...job.context.extra,
          ...(loras.length > 0 ? { lora: loras.map((l) => `${l.path}:${l.scale}`).join(", ") } : {}),
          ...(control
            ? {
                control: `${controlPath}:${control.scale}${control.guessMode ? " (guess mode)" : ""}`,
              }
            : {}),
        },
      },
    );
    const grid = makeGrid(images, { nrow: job.nrow });
    writeFileAtomic(
      join(outDir, "grid.png"),
      encodePng(grid, { text: { parameters: params, Software: "diffuse" } }),
    );
    const tensors = new Map<string, HostTensor>([["images", images]]);
    if (job.labels) tensors.set("labels", HostTensor.int64(job.labels));
    const metadata: Record<string, string> = { parameters: params };
    if (job.prompts) metadata["prompts"] = JSON.stringify(job.prompts);
    if (job.negativePrompt !== null) metadata["negative_prompt"] = job.negativePrompt;
    writeSafetensors(join(outDir, "samples.safetensors"), tensors, { metadata });
    const secs = (performance.now() - t0) / 1000;
    console.log(
      `${total} images in ${secs.toFixed(1)} s → ${join(outDir, "grid.png")}, ${join(outDir, "samples.safetensors")}`,
    );
  } finally {
    disposePipeline(pipe);
  }
}

/**
 * A control image file as [1, 3, size, size] in [0, 1]: decoded (PNG or JPEG), transparent pixels over
 * black (an edge map draws white lines on black), centre-cropped to a square and area-resized.
 */
export function readControlImage(path: string, size: number): HostTensor<"float32"> {
  let raster: ReturnType<typeof readImage>;
  try {
    raster = readImage(path);
  } catch (e) {
    throw new UsageError(`--control: ${(e as Error).message} (give a PNG or JPEG image)`);
  }
  return controlFromRaster(raster, size);
}
