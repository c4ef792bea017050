/**
 * `npm run bench -- gpu`: the MNIST U-Net's graphs on a GPU execution provider against ONNX Runtime's
 * CPU provider in the same process, and the PyTorch peer on CUDA where this machine has one:
 *   forward  one U-Net forward at batch 128 and 1024 (GPU time, CPU time, largest difference);
 *   sample   the mnist bench's loop: 64 digits, 50 DDIM steps, guidance 3 as one 2×64 forward;
 *   train    the mnist bench's train step at batch 64 (first losses on both sides, the weights after
 *            three steps compared — on the GPU they are read back with `sync` — then the time).
 * The peer is shared/bench/torch_bench.py run on CUDA by bench/gpu_peer.py (default device cuda,
 * timers read after a synchronize), once with PyTorch's defaults (TF32 convolutions) and once with
 * TF32 off (float32 throughout, as WebGPU computes).
 * Ends with `gpu (<ep>) vs cpu: forward_b128=<r> forward_b1024=<r> sample=<r> train=<r>` (speed
 * ratios, above 1 = the GPU is faster) and, with the peer,
 * `gpu (<ep>) vs pytorch cuda (TF32 off): sample=<r> train=<r>` (PyTorch time / ours).
 *
 * Options: --ep webgpu|cuda (default webgpu), --iters N (timed runs per figure, default 10),
 * --peer DIR (the folder holding torch_bench.py, default ../shared/bench), --python PATH (default python3).
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { availableParallelism } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { UNet2DModel } from "../src/models/unet/index.ts";
import type { ExecutionProvider, SessionOptions } from "../src/runtime/options.ts";
import { HostTensor } from "../src/tensor/host.ts";
import { Rng } from "../src/tensor/rng.ts";
import { modelConfig, sampleRig, trainRig } from "./mnist.ts";
import { median, peerEnv } from "./timing.ts";

const here = dirname(fileURLToPath(import.meta.url));

interface Opts {
  ep: Exclude<ExecutionProvider, "cpu">;
  iters: number;
  peer: string;
  python: string;
}

function parse(args: readonly string[]): Opts {
  const o: Opts = {
    ep: "webgpu",
    iters: 10,
    peer: join(here, "..", "..", "shared", "bench"),
    python: "python3",
  };
  for (let i = 0; i < args.length; i += 2) {
    const [k, v] = [args[i], args[i + 1]];
    if (k === "--ep" && (v === "webgpu" || v === "cuda")) o.ep = v;
    else if (k === "--iters" && Number(v) >= 1) o.iters = Number(v);
    else if (k === "--peer" && v) o.peer = v;
    else if (k === "--python" && v) o.python = v;
    else
      throw new Error(
        `bench gpu: bad option ${k} ${v ?? ""} (options: --ep webgpu|cuda, --iters N, --peer DIR, --python PATH)`,
      );
  }
  return o;
}

/** Largest |a − b| and largest |b| over two same-shaped tensors. */
function diff(a: HostTensor, b: HostTensor): { maxAbsDiff: number; maxAbs: number } {
  const x = a.data as Float32Array;
  const y = b.data as Float32Array;
  let d = 0;
  let m = 0;
  for (let i = 0; i < x.length; i++) {
    d = Math.max(d, Math.abs(x[i]! - y[i]!));
    m = Math.max(m, Math.abs(y[i]!));
  }
  return { maxAbsDiff: d, maxAbs: m };
}

async function timed<T>(
  iters: number,
  fn: () => Promise<T>,
): Promise<{ first: number; medianS: number; last: T }> {
  let t = performance.now();
  let last = await fn();
  const first = (performance.now() - t) / 1000;
  const times: number[] = [];
  for (let i = 0; i < iters; i++) {
    t = performance.now();
    last = await fn();
    times.push((performance.now() - t) / 1000);
  }
  return { first, medianS: median(times), last };
}

async function forward(session: SessionOptions, B: number, iters: number) {
  const unet = UNet2DModel.fromConfig(modelConfig(), { seed: 0, session });
  const x = new HostTensor<"float32">(new Rng(0).normal(B * 1024), [B, 1, 32, 32]);
  const labels = Array.from({ length: B }, (_, i) => i % 11);
  const r = await timed(iters, () => unet.forward(x, 500, { classLabels: labels }));
  unet.dispose();
  return r;
}

async function sample(session: SessionOptions, iters: number) {
  const { unet, loop } = sampleRig(session);
  await loop(0, 2);
  const r = await timed(iters, () => loop(7));
  unet.dispose();
  return r;
}

async function train(session: SessionOptions, iters: number) {
  const { step, state, batches } = await trainRig(session);
  const losses: number[] = [];
  for (let i = 0; i < 3; i++) losses.push((await step.step(state, batches[i]!, 1e-4)).loss);
  // the weights after three steps (on a GPU they come back from it: `sync`)
  const t = performance.now();
  await step.sync(state);
  const syncMs = performance.now() - t;
  const params = new Map(state.params);
  let i = 0;
  const r = await timed(iters, () => step.step(state, batches[i++ % 3]!, 1e-4));
  step.dispose();
  return { ...r, losses, params, syncMs };
}

interface PeerJson {
  median_s: number;
  torch: string;
}

function runPeer(o: Opts, mode: "train" | "sample", tf32: boolean): PeerJson | string {
  const args = [join(here, "gpu_peer.py"), join(o.peer, "torch_bench.py"), "--config"];
  args.push(join(o.peer, "configs", "unet-mnist.json"), "--mode", mode, "--batch", "64", "--json");
  args.push("--iters", `${o.iters}`);
  if (mode === "sample") args.push("--steps", "50", "--cfg", "3");
  if (!tf32) args.push("--no-tf32");
  const r = spawnSync(o.python, args, { encoding: "utf8", env: peerEnv(), maxBuffer: 1 << 24 });
  if (r.status !== 0) return `failed: ${(r.stderr || r.stdout).trim().split("\n").pop()}`;
  return JSON.parse(r.stdout.trim().split("\n").pop()!) as PeerJson;
}

function peerMissing(o: Opts): string | null {
  if (!existsSync(join(o.peer, "torch_bench.py"))) return `torch_bench.py is not in ${o.peer} (--peer DIR)`;
  const r = spawnSync(o.python, ["-c", "import torch; assert torch.cuda.is_available()"], {
    encoding: "utf8",
  });
  return r.status === 0 ? null : `${o.python} has no PyTorch with CUDA (--python PATH)`;
}

export async function main(args: readonly string[]): Promise<void> {
  const o = parse(args);
  const cores = availableParallelism();
  const gpu: SessionOptions = { executionProviders: [o.ep, "cpu"] };
  const cpu: SessionOptions = { executionProviders: ["cpu"] };
  console.log(`date ${new Date().toISOString()}, ${o.ep} against the CPU provider on ${cores} threads`);
  const s = (x: number) => `${(x * 1000).toFixed(1)} ms`;
  const ratios: string[] = [];
  for (const B of [128, 1024]) {
    const g = await forward(gpu, B, o.iters);
    const c = await forward(cpu, B, Math.max(2, Math.round(o.iters / (B / 128))));
    const d = diff(g.last, c.last);
    console.log(
      `forward B=${B}: ${o.ep} ${s(g.medianS)} (first run ${s(g.first)}), cpu ${s(c.medianS)}; max |diff| ${d.maxAbsDiff.toExponential(2)} of max |y| ${d.maxAbs.toFixed(2)}`,
    );
    ratios.push(`forward_b${B}=${(c.medianS / g.medianS).toFixed(2)}`);
  }
  const sampleIters = Math.max(1, Math.round(o.iters / 3));
  const gs = await sample(gpu, sampleIters);
  const cs = await sample(cpu, 1);
  const ds = diff(gs.last, cs.last);
  console.log(
    `sample (64 digits, 50 DDIM steps, CFG): ${o.ep} ${gs.medianS.toFixed(3)} s, cpu ${cs.medianS.toFixed(3)} s; max |diff| ${ds.maxAbsDiff.toExponential(2)} of max |x| ${ds.maxAbs.toFixed(1)}`,
  );
  ratios.push(`sample=${(cs.medianS / gs.medianS).toFixed(2)}`);
  const gt = await train(gpu, o.iters);
  const ct = await train(cpu, Math.max(2, Math.round(o.iters / 3)));
  const f = (xs: number[]) => xs.map((x) => x.toFixed(6)).join(", ");
  console.log(
    `train step (batch 64): ${o.ep} ${s(gt.medianS)} (first ${s(gt.first)}), cpu ${s(ct.medianS)}; first losses ${o.ep} [${f(gt.losses)}], cpu [${f(ct.losses)}]`,
  );
  let worst = { maxAbsDiff: 0, maxAbs: 0 };
  for (const [k, t] of gt.params) {
    const d = diff(t, ct.params.get(k)!);
    worst = {
      maxAbsDiff: Math.max(worst.maxAbsDiff, d.maxAbsDiff),
      maxAbs: Math.max(worst.maxAbs, d.maxAbs),
    };
  }
  console.log(
    `weights after 3 steps (${gt.params.size} tensors, read back in ${gt.syncMs.toFixed(0)} ms): max |diff| ${worst.maxAbsDiff.toExponential(2)} of max |w| ${worst.maxAbs.toFixed(2)}`,
  );
  ratios.push(`train=${(ct.medianS / gt.medianS).toFixed(2)}`);
  const missing = peerMissing(o);
  const peer: string[] = [];
  if (missing) console.log(`no PyTorch CUDA comparison: ${missing}`);
  else {
    for (const mode of ["sample", "train"] as const) {
      const ours = mode === "sample" ? gs.medianS : gt.medianS;
      for (const tf32 of [true, false]) {
        const p = runPeer(o, mode, tf32);
        const tag = `pytorch cuda ${mode} (${tf32 ? "defaults, TF32 convolutions" : "TF32 off"})`;
        if (typeof p === "string") console.log(`${tag}: ${p}`);
        else {
          console.log(`${tag}: ${s(p.median_s)} (torch ${p.torch})`);
          if (!tf32) peer.push(`${mode}=${(p.median_s / ours).toFixed(2)}`);
        }
      }
    }
  }
  console.log(`gpu (${o.ep}) vs cpu: ${ratios.join(" ")}`);
  if (peer.length > 0) console.log(`gpu (${o.ep}) vs pytorch cuda (TF32 off): ${peer.join(" ")}`);
}
