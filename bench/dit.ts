/**
 * `npm run bench -- dit`: diffusers' DiTTransformer2DModel at DiT-S width on MNIST-sized input
 * (shared/bench/configs/dit-mnist.json: 1×32×32, patch 2, 6 heads × 64, 6 blocks, 17.8 M parameters)
 * side by side with diffusers itself on PyTorch (shared/bench/diffusers_bench.py) in one run:
 *   train   one training step (forward, MSE, backward, AdamW lr 1e-4, weight decay 0.01) on a batch of 64;
 *   sample  64 images, 50 Euler steps, classifier-free guidance 3 as one 2×64 forward per step;
 *   rss     peak resident memory of each side's process (each mode in its own process).
 * The peer runs with the default allocator (the floor) and tuned (the one to beat). Ends with:
 * `dit vs diffusers: train=<speed ratio> sample=<speed ratio> rss=<diffuse/diffusers peak RSS>`.
 *
 * Options: --iters N (train, default 10), --sample-iters N (default 2), --sample-steps N (default 50:
 * the ratio per loop is the ratio per step, so fewer steps give it sooner), --threads N, --wait-idle S,
 * --repeats R (as `npm run bench -- mnist`).
 */
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { classCondition } from "../src/diffusion/conditioning.ts";
import { classifierFreeGuidance } from "../src/diffusion/guidance.ts";
import type { DiffusersConfig } from "../src/models/config-fields.ts";
import { DiTTransformer2DModel } from "../src/models/dit/index.ts";
import { resolveDenoiser } from "../src/models/registry.ts";
import type { SessionOptions } from "../src/runtime/options.ts";
import { Scheduler } from "../src/samplers/scheduler.ts";
import { HostTensor } from "../src/tensor/host.ts";
import { initParams } from "../src/tensor/params.ts";
import { Rng } from "../src/tensor/rng.ts";
import { batchSpecs, diffusionLoss, drawBatch } from "../src/train/objective.ts";
import { compileTrainStep } from "../src/train/train-step.ts";
import { compare, peerModeArgs, SHARED, timeChild } from "./compare.ts";

const here = dirname(fileURLToPath(import.meta.url));
const B = 64;

/** The benchmark's DiT config: the peer's own file when shared/ is there, else the copy in bench/. */
function ditConfig(): DiffusersConfig {
  const shared = join(SHARED, "configs", "dit-mnist.json");
  const path = existsSync(shared) ? shared : join(here, "configs", "dit-mnist.json");
  return JSON.parse(readFileSync(path, "utf8")) as DiffusersConfig;
}

/** Random (not zero-initialized) weights, so no kernel meets a special case. */
function randomParams(specs: ReturnType<ReturnType<typeof resolveDenoiser>["paramSpecs"]>) {
  const params = initParams(specs, new Rng(0));
  const rng = new Rng(1);
  for (const [k, v] of params) params.set(k, new HostTensor(rng.normal(v.size, 0, 0.02), v.shape));
  return params;
}

async function trainChild(session: SessionOptions, iters: number) {
  const model = resolveDenoiser(ditConfig());
  const size = model.geometry.sampleSize!;
  const step = await compileTrainStep(diffusionLoss(model), batchSpecs(model, B, size), {
    adamw: { weightDecay: 0.01 },
    ema: false,
    session,
  });
  const state = step.initState(randomParams(model.paramSpecs()));
  const sched = Scheduler.fromConfig({ _class_name: "DDPMScheduler" });
  const rng = new Rng(2);
  const spec = model.conditioning;
  const obj = {
    prediction: "epsilon" as const,
    alphasCumprod: sched.alphasCumprod,
    numTrainTimesteps: 1000,
    weighting: { kind: "uniform" as const },
    timesteps: { kind: "uniform" as const },
    nullLabel: spec.kind === "class" ? spec.nullLabel : null,
    condDropout: 0.1,
  };
  const labels = new HostTensor<"int64">(
    BigInt64Array.from({ length: B }, () => BigInt(rng.int(10))),
    [B],
  );
  const c = model.geometry.inChannels;
  const batches = Array.from({ length: 3 }, (_, i) =>
    drawBatch(
      obj,
      new HostTensor(rng.uniform(B * c * size * size, -1, 1), [B, c, size, size]),
      labels,
      rng.fold(i),
    ),
  );
  return timeChild(
    B,
    iters,
    async () => {
      for (let i = 0; i < 3; i++) await step.step(state, batches[i]!, 1e-4);
    },
    (i) => step.step(state, batches[i % 3]!, 1e-4),
  );
}

async function sampleChild(session: SessionOptions, iters: number, steps: number) {
  const cfg = ditConfig();
  const model = DiTTransformer2DModel.fromParams(cfg, randomParams(resolveDenoiser(cfg).paramSpecs()), {
    session,
  });
  const geo = model.bound.geometry;
  const size = geo.sampleSize!;
  const spec = model.bound.conditioning;
  const nullLabel = spec.kind === "class" ? spec.nullLabel! : 0;
  const labels = Array.from({ length: B }, (_, i) => i % 10);
  const net = classifierFreeGuidance(
    (x, t, cond) => model.denoise(x as HostTensor<"float32">, t, cond),
    classCondition(labels),
    classCondition(labels.map(() => nullLabel)),
    3,
  );
  const sched = Scheduler.fromConfig({ _class_name: "FlowMatchEulerDiscreteScheduler", shift: 1 });
  const n = B * geo.inChannels * size * size;
  const loop = (seed: number, k: number) =>
    sched.sample(net, new HostTensor(new Rng(seed).normal(n), [B, geo.inChannels, size, size]), { steps: k });
  return timeChild(
    B,
    iters,
    () => loop(0, 2),
    (i) => loop(i + 1, steps),
  );
}

export async function main(args: readonly string[]): Promise<void> {
  await compare(
    {
      name: "dit",
      peerName: "diffusers",
      file: fileURLToPath(import.meta.url),
      peerScript: "diffusers_bench.py",
      peerArgs: (mode, o) => [
        "--model-config",
        join(SHARED, "configs", "dit-mnist.json"),
        "--batch",
        `${B}`,
        ...peerModeArgs(mode, o),
      ],
      child: (mode, o) =>
        mode === "train"
          ? trainChild({ threads: o.threads }, o.iters)
          : sampleChild({ threads: o.threads }, o.sampleIters, o.sampleSteps),
    },
    args,
  );
}

if (process.argv.includes("--child")) await main(process.argv.slice(2));
