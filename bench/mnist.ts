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
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
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
import { LoadMonitor, load1, median, peerBlasWarning, peerEnv, waitIdle } from "./timing.ts";

const here = dirname(fileURLToPath(import.meta.url));
const SHARED = join(here, "..", "..", "shared", "bench");
const PYTHON = "/usr/bin/python3";
const TUNED_ENV = {
  LD_PRELOAD: "libjemalloc.so.2",
  MALLOC_CONF: "dirty_decay_ms:-1,muzzy_decay_ms:-1",
  OMP_WAIT_POLICY: "PASSIVE",
};

interface Opts {
  iters: number;
  sampleIters: number;
  threads: number;
  waitIdle: number;
  repeats: number;
}

function parse(args: readonly string[]): Opts & { child?: string } {
  const o: Opts & { child?: string } = {
    iters: 10,
    sampleIters: 2,
    threads: availableParallelism(),
    waitIdle: 0,
    repeats: 1,
  };
  for (let i = 0; i < args.length; i += 2) {
    const [k, v] = [args[i], args[i + 1]];
    const n = Number(v);
    if (k === "--child") o.child = v;
    else if (k === "--iters" && n >= 1) o.iters = n;
    else if (k === "--sample-iters" && n >= 1) o.sampleIters = n;
    else if (k === "--threads" && n >= 1) o.threads = n;
    else if (k === "--wait-idle" && n >= 0) o.waitIdle = n;
    else if (k === "--repeats" && Number.isInteger(n) && n >= 1) o.repeats = n;
    else
      throw new Error(
        `bench mnist: bad option ${k} ${v ?? ""} (options: --iters N, --sample-iters N, --threads N, --wait-idle S, --repeats R)`,
      );
  }
  return o;
}

export function modelConfig(): DiffusersConfig {
  const shared = join(SHARED, "configs", "unet-mnist.json");
  const path = existsSync(shared)
    ? shared
    : join(here, "..", "test", "fixtures", "unet-configs", "unet-mnist.json");
  return JSON.parse(readFileSync(path, "utf8")) as DiffusersConfig;
}

interface ChildResult {
  medianS: number;
  timesS: number[];
  imagesPerS: number;
  peakRssMiB: number;
  otherCores: number;
}

const peakRss = (): number => process.resourceUsage().maxRSS / 1024;

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

async function childTrain(o: Opts): Promise<ChildResult> {
  const { B, step, state, batches } = await trainRig({ threads: o.threads });
  for (let i = 0; i < 3; i++) await step.step(state, batches[i % 3]!, 1e-4);
  const times: number[] = [];
  const mon = new LoadMonitor();
  mon.start();
  for (let i = 0; i < o.iters; i++) {
    const t0 = performance.now();
    await step.step(state, batches[i % 3]!, 1e-4);
    times.push((performance.now() - t0) / 1000);
  }
  const m = median(times);
  return { medianS: m, timesS: times, imagesPerS: B / m, peakRssMiB: peakRss(), otherCores: mon.stop() };
}

async function childSample(o: Opts): Promise<ChildResult> {
  const { B, loop } = sampleRig({ threads: o.threads });
  await loop(0, 2); // warm-up: one loop of 2 steps
  const times: number[] = [];
  const mon = new LoadMonitor();
  mon.start();
  for (let i = 0; i < o.sampleIters; i++) {
    const t0 = performance.now();
    await loop(i + 1);
    times.push((performance.now() - t0) / 1000);
  }
  const m = median(times);
  return { medianS: m, timesS: times, imagesPerS: B / m, peakRssMiB: peakRss(), otherCores: mon.stop() };
}

function runChild(mode: string, o: Opts): ChildResult {
  const r = spawnSync(
    process.execPath,
    [
      "--import",
      "tsx",
      fileURLToPath(import.meta.url),
      "--child",
      mode,
      "--iters",
      `${o.iters}`,
      "--sample-iters",
      `${o.sampleIters}`,
      "--threads",
      `${o.threads}`,
    ],
    { encoding: "utf8", maxBuffer: 1 << 24 },
  );
  if (r.status !== 0) throw new Error(`bench mnist ${mode} failed:\n${r.stderr}`);
  return JSON.parse(r.stdout.trim().split("\n").pop()!) as ChildResult;
}

interface PeerResult {
  median_s: number;
  images_per_s: number;
  peak_rss_mib: number;
  other_procs_cpu_cores: number;
}

function runPeer(mode: "train" | "sample", o: Opts, env: Record<string, string>): PeerResult {
  const args = [
    join(SHARED, "torch_bench.py"),
    "--config",
    join(SHARED, "configs", "unet-mnist.json"),
    "--mode",
    mode,
    "--batch",
    "64",
    "--threads",
    `${o.threads}`,
    "--json",
  ];
  if (mode === "sample") args.push("--steps", "50", "--cfg", "3", "--iters", `${o.sampleIters}`);
  else args.push("--iters", `${o.iters}`);
  const r = spawnSync(PYTHON, args, {
    encoding: "utf8",
    env: peerEnv(env),
    maxBuffer: 1 << 24,
  });
  if (r.status !== 0) throw new Error(`torch_bench.py ${mode} failed:\n${r.stderr}`);
  return JSON.parse(r.stdout.trim().split("\n").pop()!) as PeerResult;
}

function peerMissing(): string | null {
  if (!existsSync(join(SHARED, "torch_bench.py")))
    return `the PyTorch peer is not at ${SHARED} (it lives in the project's shared/bench)`;
  const r = spawnSync(PYTHON, ["-c", "import torch"], { encoding: "utf8" });
  return r.status === 0 ? null : "python3-torch is not installed (apt-get install python3-torch)";
}

export async function main(args: readonly string[]): Promise<void> {
  const o = parse(args);
  if (o.child) {
    const r = o.child === "train" ? await childTrain(o) : await childSample(o);
    console.log(JSON.stringify(r));
    return;
  }
  if (o.waitIdle > 0) console.log(`waited ${(await waitIdle(o.waitIdle)).toFixed(0)} s for an idle machine`);
  console.log(`date ${new Date().toISOString()}, threads ${o.threads}, load ${load1().toFixed(2)}`);
  const missing = peerMissing();
  if (missing) console.log(`no PyTorch comparison: ${missing}`);
  else {
    const blas = peerBlasWarning();
    if (blas) console.log(`warning: ${blas}`);
  }
  const fmt = (s: number, ips: number, rss: number, others: number) =>
    `${s.toFixed(3)} s  ${ips.toFixed(2)} img/s  peak RSS ${rss.toFixed(0)} MiB  (others ${others.toFixed(2)} cores)`;
  const rounds: Round[] = [];
  for (let r = 0; r < o.repeats; r++) {
    const round: Round = { ours: { train: runChild("train", o), sample: runChild("sample", o) } };
    if (!missing) {
      round.default = { train: runPeer("train", o, {}), sample: runPeer("sample", o, {}) };
      round.tuned = { train: runPeer("train", o, TUNED_ENV), sample: runPeer("sample", o, TUNED_ENV) };
    }
    rounds.push(round);
    const tag = o.repeats > 1 ? `[${r + 1}/${o.repeats}] ` : "";
    for (const mode of ["train", "sample"] as const) {
      const c = round.ours[mode];
      console.log(
        `${tag}diffuse         ${mode.padEnd(6)} ${fmt(c.medianS, c.imagesPerS, c.peakRssMiB, c.otherCores)}`,
      );
    }
    for (const name of ["default", "tuned"] as const) {
      const p = round[name];
      if (!p) continue;
      for (const mode of ["train", "sample"] as const) {
        const q = p[mode];
        console.log(
          `${tag}pytorch ${name.padEnd(7)} ${mode.padEnd(6)} ${fmt(q.median_s, q.images_per_s, q.peak_rss_mib, q.other_procs_cpu_cores)}`,
        );
      }
    }
    if (round.tuned && o.repeats > 1) console.log(`${tag}this round: ${ratios(round.ours, round.tuned)}`);
  }
  if (missing) return;
  // each figure: the median over the rounds
  const ours = {
    train: medianChild(rounds.map((r) => r.ours.train)),
    sample: medianChild(rounds.map((r) => r.ours.sample)),
  };
  const peer = (name: "default" | "tuned") => ({
    train: medianPeer(rounds.map((r) => r[name]!.train)),
    sample: medianPeer(rounds.map((r) => r[name]!.sample)),
  });
  if (o.repeats > 1) {
    console.log(`medians over ${o.repeats} rounds:`);
    for (const mode of ["train", "sample"] as const) {
      const c = ours[mode];
      console.log(
        `diffuse         ${mode.padEnd(6)} ${fmt(c.medianS, c.imagesPerS, c.peakRssMiB, c.otherCores)}`,
      );
    }
    for (const name of ["default", "tuned"] as const) {
      for (const mode of ["train", "sample"] as const) {
        const q = peer(name)[mode];
        console.log(
          `pytorch ${name.padEnd(7)} ${mode.padEnd(6)} ${fmt(q.median_s, q.images_per_s, q.peak_rss_mib, q.other_procs_cpu_cores)}`,
        );
      }
    }
  }
  console.log(`vs the default peer (the floor): ${ratios(ours, peer("default"))}`);
  console.log(`mnist vs pytorch: ${ratios(ours, peer("tuned"))}`);
}

interface Pair<T> {
  train: T;
  sample: T;
}
interface Round {
  ours: Pair<ChildResult>;
  default?: Pair<PeerResult>;
  tuned?: Pair<PeerResult>;
}

/** The summary ratios: speed (above 1 = we are faster) and peak RSS (below 1 = we use less). */
function ratios(ours: Pair<ChildResult>, p: Pair<PeerResult>): string {
  const train = ours.train.imagesPerS / p.train.images_per_s;
  const sample = p.sample.median_s / ours.sample.medianS;
  const rss =
    Math.max(ours.train.peakRssMiB, ours.sample.peakRssMiB) /
    Math.max(p.train.peak_rss_mib, p.sample.peak_rss_mib);
  return `train=${train.toFixed(2)} sample=${sample.toFixed(2)} rss=${rss.toFixed(2)}`;
}

function medianChild(rs: readonly ChildResult[]): ChildResult {
  const m = median(rs.map((r) => r.medianS));
  return {
    medianS: m,
    timesS: rs.flatMap((r) => r.timesS),
    imagesPerS: median(rs.map((r) => r.imagesPerS)),
    peakRssMiB: median(rs.map((r) => r.peakRssMiB)),
    otherCores: Math.max(...rs.map((r) => r.otherCores)),
  };
}

function medianPeer(rs: readonly PeerResult[]): PeerResult {
  return {
    median_s: median(rs.map((r) => r.median_s)),
    images_per_s: median(rs.map((r) => r.images_per_s)),
    peak_rss_mib: median(rs.map((r) => r.peak_rss_mib)),
    other_procs_cpu_cores: Math.max(...rs.map((r) => r.other_procs_cpu_cores)),
  };
}

if (process.argv.includes("--child")) await main(process.argv.slice(2));
