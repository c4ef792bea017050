/**
 * `npm run bench -- mmdit`: diffusers' SD3Transformer2DModel (the MM-DiT of Stable Diffusion 3) at
 * emoji-latent size — shared/bench/configs/mmdit-emoji.json: 4×16×16 latents, patch 2 (64 image
 * tokens) + 77 text tokens of width 256 and a 256-wide pooled vector, 6 joint blocks of 6 heads × 64,
 * 30.9 M parameters — side by side with diffusers itself on PyTorch (shared/bench/diffusers_bench.py,
 * run with the default allocator and tuned) in one run:
 *   train   one training step at batch 32: rectified flow x_t = (1 − σ)·x0 + σ·ε, forward with random
 *           text embeddings [32, 77, 256] and pooled vectors [32, 256] as batch inputs (no text encoder
 *           in the step, as the peer), MSE against ε − x0, backward, AdamW (lr 1e-4, weight decay 0.01);
 *           the position table is a buffer on both sides (not trained);
 *   sample  16 latents, 28 flow-matching Euler steps (ours: FlowMatchEulerDiscreteScheduler, shift 3 as
 *           SD3; the peer: Euler on a linear σ ladder — the update is nothing next to the network),
 *           classifier-free guidance 3 as ONE 2×16 forward per step, text embeddings given;
 *   rss     peak resident memory of each side's process (each mode in its own process).
 * Ends with `mmdit vs diffusers: train=<speed ratio> sample=<speed ratio> rss=<diffuse/diffusers peak RSS>`.
 *
 * Options as `npm run bench -- dit`: --iters N (train, default 10), --sample-iters N (default 2),
 * --sample-steps N (default 28 here), --threads N, --wait-idle S, --repeats R.
 */
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Conditioning } from "../src/diffusion/conditioning.ts";
import type { DiffusersConfig } from "../src/models/config-fields.ts";
import { SD3Transformer2DModel } from "../src/models/mmdit/index.ts";
import { type BoundDenoiser, resolveDenoiser } from "../src/models/registry.ts";
import { generate } from "../src/pipelines/generate.ts";
import type { SessionOptions } from "../src/runtime/options.ts";
import { Scheduler } from "../src/samplers/scheduler.ts";
import { HostTensor } from "../src/tensor/host.ts";
import type { Params } from "../src/tensor/params.ts";
import { Rng } from "../src/tensor/rng.ts";
import { batchSpecs, diffusionLoss, drawBatch, type Objective } from "../src/train/objective.ts";
import { compileTrainStep } from "../src/train/train-step.ts";
import { type ChildResult, compare, peerModeArgs, SHARED, timeChild } from "./compare.ts";

const here = dirname(fileURLToPath(import.meta.url));
/** Train batch (the emoji training runs at 32); images per generation; text tokens (CLIP's context). */
const TRAIN_B = 32;
const GEN_B = 16;
const TOKENS = 77;
const STEPS = 28;
const SCHEDULER = { _class_name: "FlowMatchEulerDiscreteScheduler", num_train_timesteps: 1000, shift: 3.0 };

/** The benchmark's config: the peer's own file when shared/ is there, else the copy in bench/configs. */
function configPath(): string {
  const shared = join(SHARED, "configs", "mmdit-emoji.json");
  return existsSync(shared) ? shared : join(here, "configs", "mmdit-emoji.json");
}
const mmditConfig = () => JSON.parse(readFileSync(configPath(), "utf8")) as DiffusersConfig;

/** Random trainable weights N(0, 0.02) (a fresh MM-DiT's adaLN and output layers are zero) and the buffers as a fresh model has them. */
function randomWeights(model: BoundDenoiser): { trainable: Params; buffers: Params } {
  const buffers: Params = model.buffers?.() ?? new Map();
  const rng = new Rng(1);
  const trainable: Params = new Map();
  for (const s of model.paramSpecs()) {
    if (buffers.has(s.name)) continue;
    const n = s.shape.reduce((a, b) => a * b, 1);
    trainable.set(s.name, new HostTensor(rng.normal(n, 0, 0.02), s.shape));
  }
  return { trainable, buffers };
}

/** Random text conditioning: token embeddings [n, 77, J] and pooled vectors [n, P]. */
function textCondition(model: BoundDenoiser, rng: Rng, n: number): Extract<Conditioning, { kind: "text" }> {
  const spec = model.conditioning;
  if (spec.kind !== "text" || !spec.pooledDim)
    throw new Error("bench mmdit: the config is not an SD3 transformer");
  return {
    kind: "text",
    embeds: new HostTensor(rng.normal(n * TOKENS * spec.dim), [n, TOKENS, spec.dim]),
    pooled: new HostTensor(rng.normal(n * spec.pooledDim), [n, spec.pooledDim]),
  };
}

async function trainChild(session: SessionOptions, iters: number): Promise<ChildResult> {
  const model = resolveDenoiser(mmditConfig());
  const size = model.geometry.sampleSize!;
  const c = model.geometry.inChannels;
  const { trainable, buffers } = randomWeights(model);
  const step = await compileTrainStep(
    diffusionLoss(model),
    batchSpecs(model, TRAIN_B, size, { textLength: TOKENS }),
    { adamw: { weightDecay: 0.01 }, ema: false, frozen: buffers, session },
  );
  const state = step.initState(trainable);
  const obj: Objective = {
    prediction: "flow",
    alphasCumprod: null,
    numTrainTimesteps: 1000,
    weighting: { kind: "uniform" },
    timesteps: { kind: "uniform" },
    nullLabel: null,
    condDropout: 0,
  };
  const rng = new Rng(2);
  const batches = Array.from({ length: 3 }, (_, i) => {
    const x0 = new HostTensor<"float32">(rng.normal(TRAIN_B * c * size * size), [TRAIN_B, c, size, size]);
    const feeds = drawBatch(obj, x0, null, rng.fold(i));
    const text = textCondition(model, rng, TRAIN_B);
    feeds["cond.encoder_hidden_states"] = text.embeds;
    feeds["cond.pooled_projections"] = text.pooled!;
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

async function sampleChild(session: SessionOptions, iters: number, steps: number): Promise<ChildResult> {
  const cfg = mmditConfig();
  const bound = resolveDenoiser(cfg);
  const { trainable, buffers } = randomWeights(bound);
  const model = SD3Transformer2DModel.fromParams(cfg, new Map([...trainable, ...buffers]), { session });
  const rng = new Rng(3);
  // the unconditional half: another prompt's embeddings (a pipeline's empty prompt), as the peer
  const conditions = { cond: textCondition(bound, rng, GEN_B), uncond: textCondition(bound, rng, GEN_B) };
  const sched = Scheduler.fromConfig(SCHEDULER);
  const loop = (seed: number, k: number) =>
    generate(model, sched, { conditions, steps: k, guidance: 3, seed });
  return timeChild(
    GEN_B,
    iters,
    () => loop(0, 2),
    (i) => loop(i + 1, steps),
  );
}

export async function main(args: readonly string[]): Promise<void> {
  const withSteps = args.includes("--sample-steps") ? args : [...args, "--sample-steps", `${STEPS}`];
  await compare(
    {
      name: "mmdit",
      peerName: "diffusers",
      file: fileURLToPath(import.meta.url),
      peerScript: "diffusers_bench.py",
      peerArgs: (mode, o) => [
        "--model-config",
        join(SHARED, "configs", "mmdit-emoji.json"),
        "--batch",
        `${mode === "train" ? TRAIN_B : GEN_B}`,
        "--tokens",
        `${TOKENS}`,
        ...peerModeArgs(mode, o),
      ],
      child: (mode, o) =>
        mode === "train"
          ? trainChild({ threads: o.threads }, o.iters)
          : sampleChild({ threads: o.threads }, o.sampleIters, o.sampleSteps),
    },
    withSteps,
  );
}

if (process.argv.includes("--child")) await main(process.argv.slice(2));
