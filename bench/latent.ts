/**
 * `npm run bench -- latent`: latent text-to-image diffusion (Rombach et al. 2022) at emoji size —
 * diffusers' UNet2DConditionModel of shared/bench/configs/unet-cond-emoji.json (4×16×16 latents,
 * cross-attention to 77×256 text, 24.8 M parameters) — side by side with diffusers itself on PyTorch
 * (shared/bench/diffusers_bench.py, run with the default allocator and tuned) in one run:
 *   train   one U-Net training step at batch 32: x_t = √ᾱ x0 + √(1−ᾱ) ε, forward with the text
 *           embeddings [32, 77, 256] given as a batch input (no text encoder in the step, as the peer),
 *           ε-MSE, backward, AdamW (lr 1e-4, weight decay 0.01);
 *   sample  the U-Net loop of a generation of 16 images: 50 steps (ours DDIM, the peer Euler: the
 *           update is nothing next to the network), classifier-free guidance 7.5 as ONE 2×16 forward
 *           per step, text embeddings given — what the peer's sample mode times (it has no text
 *           encoder and no VAE decode);
 *   rss     peak resident memory of each side's process (each mode in its own process).
 * Before those, the whole pipeline on our side, reported apart: a StableDiffusionPipeline folder with
 * random weights (a BPE tokenizer trained on the prompts, a 4-layer CLIPTextModel of width 256, the
 * U-Net, the AutoencoderKL of vae-emoji.json) loaded and run by pipelineGenerate — 16 prompts and
 * their empty negatives encoded, the same 50-step CFG loop, 16 latents decoded to 64×64 RGB — next to
 * the peer's VAE decode of 16 latents (vae-emoji sample mode, tuned). Ends with:
 * `latent vs diffusers: train=<speed ratio> sample=<speed ratio> rss=<diffuse/diffusers peak RSS>`.
 *
 * Options as `npm run bench -- dit`: --iters N (train, default 10), --sample-iters N (default 2),
 * --sample-steps N (default 50), --threads N, --wait-idle S, --repeats R.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Conditioning } from "../src/diffusion/conditioning.ts";
import type { DiffusersConfig } from "../src/models/config-fields.ts";
import { modelFromConfig } from "../src/models/load.ts";
import { resolveDenoiser } from "../src/models/registry.ts";
import { trainClipBpe } from "../src/models/text/bpe-train.ts";
import { CLIPTextModel } from "../src/models/text/clip-text-model.ts";
import { AutoencoderKL } from "../src/models/vae/model.ts";
import { generate } from "../src/pipelines/generate.ts";
import { disposePipeline, loadPipeline, saveTextToImagePipeline } from "../src/pipelines/pipeline-dir.ts";
import { pipelineGenerate } from "../src/pipelines/run.ts";
import { schedulerFor } from "../src/pipelines/scheduler-names.ts";
import { latentDecoder, promptConditions } from "../src/pipelines/text-to-image.ts";
import type { SessionOptions } from "../src/runtime/options.ts";
import { Scheduler } from "../src/samplers/scheduler.ts";
import { HostTensor } from "../src/tensor/host.ts";
import { initParams } from "../src/tensor/params.ts";
import { Rng } from "../src/tensor/rng.ts";
import { batchSpecs, diffusionLoss, drawBatch } from "../src/train/objective.ts";
import { compileTrainStep } from "../src/train/train-step.ts";
import {
  type ChildResult,
  compare,
  type Opts,
  optArgs,
  parseOpts,
  peerMissing,
  peerModeArgs,
  runPeerScript,
  SHARED,
  TUNED_ENV,
  timeChild,
} from "./compare.ts";
import { median, waitIdle } from "./timing.ts";

const here = dirname(fileURLToPath(import.meta.url));
/** Train batch (the emoji training runs at 32; the peer gets the same); images per generation. */
const TRAIN_B = 32;
const GEN_B = 16;
const TOKENS = 77;
const GUIDANCE = 7.5;

/** A bench config: the peer's own file when shared/ is there, else the copy in bench/configs. */
function configPath(name: string): string {
  const shared = join(SHARED, "configs", name);
  return existsSync(shared) ? shared : join(here, "configs", name);
}
const readConfig = (name: string) => JSON.parse(readFileSync(configPath(name), "utf8")) as DiffusersConfig;
const unetConfig = () => readConfig("unet-cond-emoji.json");

/** Prompts of the generation (and the tokenizer's training corpus). */
const PROMPTS = [
  "a smiling face with heart eyes",
  "a red apple with a green leaf",
  "a yellow star with a sparkle",
  "a blue whale spouting water",
  "a slice of pizza with pepperoni",
  "a cat face with tears of joy",
  "a rocket flying to the moon",
  "a green four leaf clover",
  "a thumbs up in a yellow hand",
  "a red heart with a ribbon",
  "a cup of hot coffee",
  "a rainbow over white clouds",
  "a sleeping face with a snore",
  "a birthday cake with candles",
  "a fire flame in orange and red",
  "a globe showing europe and africa",
];

/** Random text embeddings [n, 77, 256] (what a text encoder would hand the U-Net). */
const textEmbeds = (rng: Rng, n: number, dim: number): HostTensor<"float32"> =>
  new HostTensor(rng.normal(n * TOKENS * dim), [n, TOKENS, dim]);

async function trainChild(session: SessionOptions, iters: number): Promise<ChildResult> {
  const model = resolveDenoiser(unetConfig());
  const size = model.geometry.sampleSize!;
  const c = model.geometry.inChannels;
  const step = await compileTrainStep(diffusionLoss(model), batchSpecs(model, TRAIN_B, size), {
    adamw: { weightDecay: 0.01 },
    ema: false,
    session,
  });
  // the model's own init (PyTorch's defaults, as the peer's from_config; no layer starts at zero)
  const state = step.initState(initParams(model.paramSpecs(), new Rng(0)));
  const sched = Scheduler.fromConfig({ _class_name: "DDPMScheduler" });
  const obj = {
    prediction: "epsilon" as const,
    alphasCumprod: sched.alphasCumprod,
    numTrainTimesteps: 1000,
    weighting: { kind: "uniform" as const },
    timesteps: { kind: "uniform" as const },
    nullLabel: null,
    condDropout: 0,
  };
  const dim = Number(unetConfig()["cross_attention_dim"]);
  const rng = new Rng(2);
  const batches = Array.from({ length: 3 }, (_, i) => {
    const x0 = new HostTensor<"float32">(rng.normal(TRAIN_B * c * size * size), [TRAIN_B, c, size, size]);
    const feeds = drawBatch(obj, x0, null, rng.fold(i));
    feeds["cond.encoder_hidden_states"] = textEmbeds(rng, TRAIN_B, dim);
    return feeds;
  });
  return timeChild(
    TRAIN_B,
    iters,
    async () => {
      for (let i = 0; i < 3; i++) await step.step(state, batches[i]!, 1e-4);
    },
    (i) => step.step(state, batches[i % 3]!, 1e-4),
  );
}

/** The DDIM scheduler of the pipeline (SD's training schedule, no x̂0 clipping). */
const SCHEDULER_CONFIG = {
  _class_name: "DDPMScheduler",
  num_train_timesteps: 1000,
  beta_schedule: "scaled_linear",
  beta_start: 0.00085,
  beta_end: 0.012,
  prediction_type: "epsilon",
  clip_sample: false,
};
const ddim = () => schedulerFor({ name: "ddim" }, SCHEDULER_CONFIG);

/** The U-Net loop alone: 16 images, CFG as one 2×16 forward per step, random prompt embeddings. */
async function sampleChild(session: SessionOptions, iters: number, steps: number): Promise<ChildResult> {
  const cfg = unetConfig();
  const model = modelFromConfig(cfg, { seed: 0, session });
  const dim = Number(cfg["cross_attention_dim"]);
  const rng = new Rng(3);
  const conditions: { cond: Conditioning; uncond: Conditioning } = {
    cond: { kind: "text", embeds: textEmbeds(rng, GEN_B, dim) },
    uncond: { kind: "text", embeds: textEmbeds(rng, GEN_B, dim) }, // the empty prompt's, to a pipeline
  };
  const sched = ddim();
  const loop = (seed: number, k: number) =>
    generate(model, sched, { conditions, steps: k, guidance: GUIDANCE, seed });
  return timeChild(
    GEN_B,
    iters,
    () => loop(0, 2),
    (i) => loop(i + 1, steps),
  );
}

/** A StableDiffusionPipeline folder with random weights: tokenizer, text encoder, U-Net, VAE, scheduler. */
async function writePipeline(dir: string): Promise<void> {
  const tokenizer = trainClipBpe(PROMPTS, { vocabSize: 1024, minFrequency: 1 });
  const cfg = unetConfig();
  const textEncoder = CLIPTextModel.fromConfig(
    {
      vocab_size: tokenizer.vocabSize,
      hidden_size: Number(cfg["cross_attention_dim"]),
      intermediate_size: 4 * Number(cfg["cross_attention_dim"]),
      num_hidden_layers: 4,
      num_attention_heads: 4,
      max_position_embeddings: TOKENS,
      hidden_act: "quick_gelu",
      bos_token_id: tokenizer.bosTokenId,
      eos_token_id: tokenizer.eosTokenId,
      pad_token_id: tokenizer.padTokenId,
    },
    { seed: 1 },
  );
  const unet = modelFromConfig(cfg, { seed: 0 });
  const vae = AutoencoderKL.fromConfig(readConfig("vae-emoji.json"), { seed: 2 });
  try {
    await saveTextToImagePipeline(dir, {
      unet,
      textEncoder,
      tokenizer,
      vae,
      schedulerConfig: SCHEDULER_CONFIG,
      info: { numClasses: null, dataset: "bench" },
    });
  } finally {
    unet.dispose();
    textEncoder.dispose();
    vae.dispose();
  }
}

interface PipelineResult extends ChildResult {
  /** Encoding the 16 prompts and their 16 empty negatives (one text-encoder run of 32), median of 3. */
  textS: number;
  /** Decoding 16 latents to 64×64 RGB, median of 3. */
  decodeS: number;
}

/** The whole generation: load the pipeline folder, then prompts → text encoder → U-Net loop → VAE decode. */
async function pipelineChild(threads: number, iters: number, steps: number): Promise<PipelineResult> {
  process.env["DIFFUSE_THREADS"] = `${threads}`; // loadPipeline's sessions take the default options
  const root = mkdtempSync(join(tmpdir(), "diffuse-bench-latent-"));
  try {
    const dir = join(root, "pipeline");
    await writePipeline(dir);
    const pipe = await loadPipeline(dir);
    const sched = ddim();
    const run = (seed: number, k: number) =>
      pipelineGenerate(pipe, sched, { prompts: PROMPTS, steps: k, guidance: GUIDANCE, seed });
    const r = await timeChild(
      GEN_B,
      iters,
      () => run(0, 2),
      (i) => run(i + 1, steps),
    );
    const timeIt = async (fn: () => Promise<unknown>) => {
      const ts: number[] = [];
      for (let i = 0; i < 3; i++) {
        const t0 = performance.now();
        await fn();
        ts.push((performance.now() - t0) / 1000);
      }
      return median(ts);
    };
    const textS = await timeIt(() => promptConditions(pipe.text!, PROMPTS));
    const z = new HostTensor<"float32">(new Rng(4).normal(GEN_B * 4 * 16 * 16), [GEN_B, 4, 16, 16]);
    const decodeS = await timeIt(() => latentDecoder(pipe.vae!)(z));
    disposePipeline(pipe);
    return { ...r, textS, decodeS };
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

/** Our whole pipeline and the peer's VAE decode (tuned), `repeats` times; prints medians. */
function pipelineSection(o: Opts): void {
  const file = fileURLToPath(import.meta.url);
  const ours: PipelineResult[] = [];
  const decodes: number[] = [];
  const missing = peerMissing("diffusers_bench.py");
  for (let r = 0; r < o.repeats; r++) {
    const c = spawnSync(process.execPath, ["--import", "tsx", file, "--child", "pipeline", ...optArgs(o)], {
      encoding: "utf8",
      maxBuffer: 1 << 24,
    });
    if (c.status !== 0) throw new Error(`bench latent pipeline failed:\n${c.stderr}`);
    ours.push(JSON.parse(c.stdout.trim().split("\n").pop()!) as PipelineResult);
    if (!missing) {
      const p = runPeerScript(
        "diffusers_bench.py",
        [
          "--model-config",
          join(SHARED, "configs", "vae-emoji.json"),
          "--batch",
          `${GEN_B}`,
          "--mode",
          "sample",
          "--threads",
          `${o.threads}`,
          "--iters",
          `${Math.max(3, o.sampleIters)}`,
        ],
        TUNED_ENV,
      );
      decodes.push(p.median_s);
    }
  }
  const m = (f: (r: PipelineResult) => number) => median(ours.map(f));
  const rounds = o.repeats > 1 ? ` (medians of ${o.repeats} rounds)` : "";
  console.log(
    `pipeline, ${GEN_B} prompts, ${o.sampleSteps} DDIM steps, CFG ${GUIDANCE}, text encoding and VAE decode included${rounds}:`,
  );
  console.log(
    `diffuse pipeline         ${m((r) => r.medianS).toFixed(3)} s  ${m((r) => r.imagesPerS).toFixed(2)} img/s  peak RSS ${m((r) => r.peakRssMiB).toFixed(0)} MiB  (others ${Math.max(...ours.map((r) => r.otherCores)).toFixed(2)} cores)`,
  );
  console.log(
    `  of which, timed apart: text encoding (${GEN_B} prompts + ${GEN_B} empty) ${m((r) => r.textS).toFixed(3)} s, VAE decode of ${GEN_B} latents ${m((r) => r.decodeS).toFixed(3)} s`,
  );
  if (missing) console.log(`no diffusers VAE decode: ${missing}`);
  else
    console.log(
      `diffusers tuned VAE decode of ${GEN_B} latents ${median(decodes).toFixed(3)} s (the peer has no text encoder: its sample line below is the U-Net loop alone)`,
    );
}

export async function main(args: readonly string[]): Promise<void> {
  const at = args.indexOf("--child");
  if (at >= 0 && args[at + 1] === "pipeline") {
    const o = parseOpts("latent", [...args.slice(0, at), ...args.slice(at + 2)]);
    console.log(JSON.stringify(await pipelineChild(o.threads, o.sampleIters, o.sampleSteps)));
    return;
  }
  const o = parseOpts("latent", args);
  let rest = args;
  if (!o.child) {
    // the pipeline section runs first (the summary line stays last), so the idle wait comes before it
    if (o.waitIdle > 0) {
      console.log(`waited ${(await waitIdle(o.waitIdle)).toFixed(0)} s for an idle machine`);
      const w = args.indexOf("--wait-idle");
      rest = [...args.slice(0, w), ...args.slice(w + 2)];
    }
    pipelineSection(o);
  }
  await compare(
    {
      name: "latent",
      peerName: "diffusers",
      file: fileURLToPath(import.meta.url),
      peerScript: "diffusers_bench.py",
      peerArgs: (mode, opts) => [
        "--model-config",
        join(SHARED, "configs", "unet-cond-emoji.json"),
        "--batch",
        `${mode === "train" ? TRAIN_B : GEN_B}`,
        "--tokens",
        `${TOKENS}`,
        ...peerModeArgs(mode, opts).map((a, i, all) => (all[i - 1] === "--cfg" ? `${GUIDANCE}` : a)),
      ],
      child: (mode, opts) =>
        mode === "train"
          ? trainChild({ threads: opts.threads }, opts.iters)
          : sampleChild({ threads: opts.threads }, opts.sampleIters, opts.sampleSteps),
    },
    rest,
  );
}

if (process.argv.includes("--child")) await main(process.argv.slice(2));
