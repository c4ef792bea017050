/**
 * `npm run bench -- mnist`: the MNIST U-Net (shared/bench/configs/unet-mnist.json, 1.62 M parameters)
 * side by side with the PyTorch peer (shared/bench/torch_bench.py) in one run:
 *   train   one training step (forward, ε-MSE, backward, AdamW) on a batch of 64, images/s;
 *   sample  64 digits, 50 DDIM steps, classifier-free guidance 3 as one 2×64 forward per step;
 *   rss     peak resident memory of each side's process (each mode in its own process).
 * Each of our modes runs in a child process so its peak RSS is its own. The peer runs twice: with
 * the default allocator (the floor) and tuned (jemalloc without decay, OMP passive), the one to beat.
 * Ends with: `mnist vs pytorch: train=<speed ratio> sample=<speed ratio> rss=<diffuse/pytorch peak RSS>`.
 *
 * Options: --iters N (train, default 10), --sample-iters N (default 2), --threads N (default: all
 * cores), --wait-idle S (wait up to S seconds for other processes to go quiet first), --repeats R
 * (default 1): ours, the default peer and the tuned peer run in turn R times and each figure is the
 * median over the repeats, so the machine's slow and fast minutes fall on every side alike.
 */
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { guidedNetwork } from "../src/diffusion/guidance.ts";
import { resolveDenoiser } from "../src/models/registry.ts";
import { type DiffusersConfig, initUNet, resolveUNetConfig, UNet2DModel } from "../src/models/unet/index.ts";
import type { SessionOptions } from "../src/runtime/options.ts";
import { Scheduler } from "../src/samplers/scheduler.ts";
import { HostTensor } from "../src/tensor/host.ts";
import { Rng } from "../src/tensor/rng.ts";
import { batchSpecs, diffusionLoss, drawBatch } from "../src/train/objective.ts";
import { compileTrainStep } from "../src/train/train-step.ts";
import { compare, peerModeArgs, SHARED, timeChild } from "./compare.ts";

const here = dirname(fileURLToPath(import.meta.url));

export function modelConfig(): DiffusersConfig {
  const shared = join(SHARED, "configs", "unet-mnist.json");
  const path = existsSync(shared)
    ? shared
    : join(here, "..", "test", "fixtures", "unet-configs", "unet-mnist.json");
  return JSON.parse(readFileSync(path, "utf8")) as DiffusersConfig;
}

/**
 * The train-step rig both sides time: the MNIST U-Net's ε-MSE step at batch 64 (AdamW, no EMA), its
 * state from seed 0 and three fixed batches. Shared with bench/gpu.ts.
 */
export async function trainRig(session: SessionOptions) {
  const cfg = modelConfig();
  const B = 64;
  const model = resolveDenoiser(cfg);
  const step = await compileTrainStep(diffusionLoss(model), batchSpecs(model, B, 32), {
    adamw: { weightDecay: 0.01 },
    ema: false,
    session,
  });
  const state = step.initState(initUNet(resolveUNetConfig(cfg), new Rng(0)));
  const sched = Scheduler.fromConfig({ _class_name: "DDPMScheduler" });
  const rng = new Rng(1);
  const obj = {
    prediction: "epsilon" as const,
    alphasCumprod: sched.alphasCumprod,
    numTrainTimesteps: 1000,
    weighting: { kind: "uniform" as const },
    nullLabel: 10,
    condDropout: 0.1,
    timesteps: { kind: "uniform" as const },
  };
  const labels = new HostTensor<"int64">(
    BigInt64Array.from({ length: B }, () => BigInt(rng.int(10))),
    [B],
  );
  const batches = Array.from({ length: 3 }, (_, i) =>
    drawBatch(obj, new HostTensor(rng.uniform(B * 1024, -1, 1), [B, 1, 32, 32]), labels, rng.fold(i)),
  );
  return { B, step, state, batches };
}

/**
 * The sampling rig: 64 digits (labels 0–9), 50 DDIM steps, guidance 3 as one 2×64 forward per step,
 * random weights from seed 0; `loop(seed)` runs one loop from that seed's noise.
 */
export function sampleRig(session: SessionOptions) {
  const cfg = modelConfig();
  const B = 64;
  const unet = UNet2DModel.fromConfig(cfg, { seed: 0, session });
  const sched = Scheduler.fromConfig({
    _class_name: "DDIMScheduler",
    timestep_spacing: "leading",
    clip_sample: false,
  });
  const labels = Array.from({ length: B }, (_, i) => i % 10);
  const both = [...labels.map(() => 10), ...labels];
  const net = guidedNetwork((x, t) => unet.forward(x as HostTensor<"float32">, t, { classLabels: both }), 3);
  const loop = (seed: number, steps = 50) =>
    sched.sample(net, new HostTensor(new Rng(seed).normal(B * 1024), [B, 1, 32, 32]), { steps });
  return { B, unet, loop };
}

export async function main(args: readonly string[]): Promise<void> {
  await compare(
    {
      name: "mnist",
      peerName: "pytorch",
      file: fileURLToPath(import.meta.url),
      peerScript: "torch_bench.py",
      peerArgs: (mode, o) => [
        "--config",
        join(SHARED, "configs", "unet-mnist.json"),
        "--batch",
        "64",
        ...peerModeArgs(mode, o),
      ],
      child: async (mode, o) => {
        if (mode === "train") {
          const { B, step, state, batches } = await trainRig({ threads: o.threads });
          return timeChild(
            B,
            o.iters,
            async () => {
              for (let i = 0; i < 3; i++) await step.step(state, batches[i % 3]!, 1e-4);
            },
            (i) => step.step(state, batches[i % 3]!, 1e-4),
          );
        }
        const { B, loop } = sampleRig({ threads: o.threads });
        // warm-up: one loop of 2 steps
        return timeChild(
          B,
          o.sampleIters,
          () => loop(0, 2),
          (i) => loop(i + 1),
        );
      },
    },
    args,
  );
}

if (process.argv.includes("--child")) await main(process.argv.slice(2));
