/**
 * `diffuse finetune`: adapts a text-to-image pipeline (a folder, or the bundled `emoji`) to a folder
 * of captioned images — LoRA by default, or every weight — or teaches it a subject from a few images
 * (DreamBooth: --instance-prompt, with prior preservation by --class-prompt). The run is a `diffuse
 * train` run (train/finetune-task.ts): progress bar, checkpoints, resume, sample grids, metrics.jsonl;
 * its config.json records the base's components, so the run folder alone describes it.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { checkOutputDir } from "../io/fs-check.ts";
import { samplingDefaults } from "../pipelines/options.ts";
import { disposePipeline, loadPipeline } from "../pipelines/pipeline-dir.ts";
import { imageSize } from "../pipelines/run.ts";
import { ConfigFieldError, resolveConfig } from "../train/config.ts";
import { readConfigFile, setField, settableFields } from "../train/config-file.ts";
import { LORA_WEIGHTS_NAME } from "../train/finetune-task.ts";
import type { TrainArgs } from "../train/trainer.ts";
import { bool, num, parseFlags, str, UsageError } from "./args.ts";
import { diffuseCommand } from "./paths.ts";
import { runTraining } from "./train.ts";

const HELP = `usage: diffuse finetune --model DIR|NAME --data FOLDER [flags]

Fine-tunes a text-to-image pipeline on a folder of images: LoRA adapters on the U-Net's attention
(default; writes pytorch_lora_weights.safetensors, which diffuse sample --lora and diffusers load) or
every weight (--method full; writes a pipeline folder). Captions come from FOLDER/metadata.jsonl
({"file_name": …, "text": …} per line), from a .txt file beside each image, or from --instance-prompt.
Re-running the same command resumes from the run's last checkpoint.

flags:
  --model DIR|NAME       the base pipeline: a folder or a bundled model (emoji)
  --data FOLDER          the images to learn (PNG/JPEG; transparent pixels over white)
  --instance-prompt P    DreamBooth: one prompt for every image, with a rare token (e.g. "a zwx emoji")
  --class-prompt P       prior preservation: the base draws --class-images images of the class first
                         (e.g. "an emoji"), trained alongside with weight --prior-weight
  --class-images N       class images to draw (default 64)
  --prior-weight W       loss weight of the class images (default 1)
  --method lora|full     what to train (default lora)
  --rank R               LoRA rank (default 4)
  --alpha A              LoRA alpha (default: the rank)
  --targets LIST         LoRA layers, comma-separated names (default to_q,to_k,to_v,to_out.0)
  --text-encoder         train the text encoder too (LoRA on q_proj,k_proj,v_proj,out_proj, or all of it)
  --steps N              training steps (default 400)
  --batch-size N         images per step (default 4)
  --lr X                 learning rate (default 1e-4 for LoRA, 2e-5 for full)
  --seed N               seed (default 0)
  --set KEY=VALUE        any other config field, e.g. --set training.cond_dropout=0 (repeatable)
  --config FILE          start from a run config instead of the defaults (flags override it)
  --threads N            ONNX Runtime threads (default: all cores)
  --out DIR              run folder (default runs/finetune)
  --overwrite            start over even if --out has a checkpoint
`;

/** A text flag that must not be blank. */
function text(p: ReturnType<typeof parseFlags>, name: string): string | null {
  const v = str(p, name);
  if (v === undefined) return null;
  if (v.trim() === "")
    throw new UsageError(`--${name} is empty; give a prompt, e.g. --${name} "a zwx emoji"`);
  return v.trim();
}

export async function run(argv: readonly string[]): Promise<void> {
  const p = parseFlags("finetune", argv, {
    model: { type: "string" },
    data: { type: "string" },
    "instance-prompt": { type: "string" },
    "class-prompt": { type: "string" },
    "class-images": { type: "string" },
    "prior-weight": { type: "string" },
    method: { type: "string" },
    rank: { type: "string" },
    alpha: { type: "string" },
    targets: { type: "string" },
    "text-encoder": { type: "boolean" },
    steps: { type: "string" },
    "batch-size": { type: "string" },
    lr: { type: "string" },
    seed: { type: "string" },
    set: { type: "string", multiple: true },
    config: { type: "string" },
    threads: { type: "string" },
    out: { type: "string" },
    overwrite: { type: "boolean" },
  });
  if (bool(p, "help")) {
    console.log(HELP);
    return;
  }
  if (p.positionals.length) throw new UsageError(`unexpected argument "${p.positionals[0]}"`);
  const given = str(p, "config");
  const from = given ? readConfigFile(given) : null;
  const baseName =
    str(p, "model") ??
    ((from?.["finetune"] as Record<string, unknown> | undefined)?.["base"] as string | undefined);
  if (!baseName)
    throw new UsageError("pass --model DIR (the pipeline to fine-tune) or the bundled --model emoji");
  const dataDir =
    str(p, "data") ??
    ((from?.["data"] as Record<string, unknown> | undefined)?.["path"] as string | undefined);
  if (!dataDir) throw new UsageError("pass --data FOLDER (the images to learn)");
  if (!existsSync(dataDir)) throw new UsageError(`--data: ${dataDir} does not exist`);
  const fromFinetune = (from?.["finetune"] as Record<string, unknown> | undefined) ?? {};
  const method = str(p, "method") ?? String(fromFinetune["method"] ?? "lora");
  if (method !== "lora" && method !== "full")
    throw new UsageError(`--method must be lora or full, got "${method}"`);
  const instancePrompt = text(p, "instance-prompt");
  const classPrompt = text(p, "class-prompt");
  if (classPrompt && !instancePrompt)
    throw new UsageError(
      "--class-prompt (prior preservation) needs --instance-prompt (the prompt of the images to learn)",
    );

  // the base's components go into the run's config, so that the run folder describes itself
  let base: Awaited<ReturnType<typeof loadPipeline>>;
  try {
    base = await loadPipeline(baseName);
  } catch (e) {
    throw new UsageError(`--model: ${(e as Error).message}`);
  }
  let raw: Record<string, unknown>;
  try {
    if (!base.text || !base.vae)
      throw new UsageError(
        `--model: ${base.dir} is a ${base.pipelineClass}; diffuse finetune adapts text-to-image pipelines`,
      );
    const defaults = samplingDefaults(base);
    raw = {
      model: base.denoiser.config,
      scheduler: base.schedulerConfig,
      text_encoder: base.text.textEncoder.config,
      tokenizer: { path: join(base.dir, "tokenizer") },
      vae: { path: join(base.dir, "vae") },
      finetune: {
        ...fromFinetune,
        base: base.dir,
        method,
        ...(instancePrompt ? { instance_prompt: instancePrompt } : {}),
        ...(classPrompt ? { class_prompt: classPrompt } : {}),
      },
      data: { dataset: "folder", path: dataDir, size: imageSize(base), channels: 3 },
      training: {
        steps: 400,
        batch_size: 4,
        lr: method === "lora" ? 1e-4 : 2e-5,
        lr_schedule: "constant",
        warmup_steps: 0,
        ema_decay: 0,
        cond_dropout: 0.1,
        grad_clip: 1,
        ...((from?.["training"] as Record<string, unknown> | undefined) ?? {}),
      },
      output: {
        checkpoint_every: 100,
        sample_every: 100,
        log_every: 10,
        sample_steps: defaults.steps,
        sample_guidance: defaults.guidance,
        ...((from?.["output"] as Record<string, unknown> | undefined) ?? {}),
      },
    };
  } finally {
    disposePipeline(base);
  }
  const flags: [string, string, { min?: number; max?: number; integer?: boolean }][] = [
    ["class-images", "finetune.num_class_images", { min: 1, max: 10000, integer: true }],
    ["prior-weight", "finetune.prior_loss_weight", { min: 0 }],
    ["rank", "finetune.rank", { min: 1, max: 1024, integer: true }],
    ["alpha", "finetune.alpha", { min: 0 }],
    ["steps", "training.steps", { min: 1, integer: true }],
    ["batch-size", "training.batch_size", { min: 1, integer: true }],
    ["lr", "training.lr", { min: 0, max: 1 }],
    ["seed", "training.seed", { min: 0, integer: true }],
    ["threads", "training.threads", { min: 1, integer: true }],
  ];
  for (const [flag, field, range] of flags) {
    const v = num(p, flag, range);
    if (v !== undefined) raw = setField(raw, field, JSON.stringify(v));
  }
  const targets = str(p, "targets");
  if (targets !== undefined) {
    const list = targets.split(",").map((s) => s.trim());
    if (list.some((s) => s === ""))
      throw new UsageError(`--targets: "${targets}" has an empty name; e.g. --targets to_q,to_v`);
    raw = setField(raw, "finetune.targets", JSON.stringify(list));
  }
  if (bool(p, "text-encoder")) raw = setField(raw, "finetune.text_encoder", "true");
  for (const kv of (p.values["set"] as string[] | undefined) ?? []) {
    const eq = kv.indexOf("=");
    if (eq <= 0) throw new UsageError(`--set takes KEY=VALUE (e.g. training.lr=3e-4), got "${kv}"`);
    try {
      raw = setField(raw, kv.slice(0, eq), kv.slice(eq + 1), settableFields(raw));
    } catch (e) {
      if (e instanceof ConfigFieldError) throw new UsageError(e.message);
      throw e;
    }
  }
  try {
    resolveConfig(raw); // every field checked before the worker starts
  } catch (e) {
    if (e instanceof ConfigFieldError) throw new UsageError(e.message);
    throw e;
  }
  const outDir = str(p, "out") ?? join("runs", "finetune");
  try {
    checkOutputDir(outDir, "--out");
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const args: TrainArgs = { config: raw, outDir, overwrite: bool(p, "overwrite") };
  const prompt = instancePrompt ?? "…";
  await runTraining(args, {
    module: "train/trainer",
    fn: "trainRun",
    next: (modelDir) =>
      method === "lora"
        ? `Sample it: ${diffuseCommand()} sample --model ${baseName} --lora ${join(modelDir, LORA_WEIGHTS_NAME)} --prompt "${prompt}"`
        : `Sample it: ${diffuseCommand()} sample --model ${modelDir} --prompt "${prompt}"`,
  });
}
