/**
 * `npm run bench -- engine`: the engine against PyTorch eager, side by side in one run, at U-Net
 * shapes (batch 64): 3×3 convolutions, a 1024² matmul, self-attention over 64 tokens of width 64,
 * group norm. Each case is built with the engine twice, one ONNX Runtime session each:
 *
 * - fwd: the forward pass as diffuse runs inference, the weights embedded in the graph as constants
 *   (as `UNet2DModel` does; ONNX Runtime then pre-packs them);
 * - fwd+bwd: the forward pass, loss = Σ y ⊙ R (R a fixed random input), and `grad` of the loss with
 *   respect to every input and weight — all in ONE session.
 *
 * `run` is timed (warm-up, then the median of N; outputs end up in JS memory as a user gets them). The
 * PyTorch peer `engine_peer.py` times the same cases (same shapes, same threads, `.backward()` for
 * fwd+bwd) twice: with the default allocator (the floor) and tuned (jemalloc without decay,
 * OMP_WAIT_POLICY=PASSIVE: shared/bench/README.md, "The peer at its best"), the one to beat. With
 * --repeats R the three (ours, default peer, tuned peer) run in turn R times and each figure is the
 * median over the repeats, so a burst of load on the shared machine hits all of them alike.
 *
 * GFLOP/s use analytic counts: 2·MACs of the convolutions and matrix products, fwd+bwd counted as 3×
 * the forward; group norm uses a nominal 7 flops per element forward (it is memory-bound: compare
 * its times). The last line is the summary: PyTorch time / our time against the tuned peer, conv as
 * the geometric mean over the conv cases, matmul the forward product.
 *
 * options: --iters N (20) --warmup N (3) --threads N (2) --repeats R (1) --only SUBSTRING
 *          --no-peer --wait-idle MAX_S (first wait until other processes leave the CPU idle)
 *          --json FILE (write every figure) --no-spin (ONNX Runtime's idle intra-op threads sleep)
 */
import { spawnSync } from "node:child_process";
import { existsSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { multiHeadAttention } from "../src/nn/attention.ts";
import { conv2d } from "../src/nn/linear.ts";
import { groupNorm } from "../src/nn/norm.ts";
import { compileGraph, trace } from "../src/runtime/compile.ts";
import type { SessionOptions } from "../src/runtime/options.ts";
import type { CompiledGraph } from "../src/runtime/session.ts";
import { grad } from "../src/tensor/autodiff.ts";
import { HostTensor } from "../src/tensor/host.ts";
import * as o from "../src/tensor/ops.ts";
import { initParams, ParamScope, type ParamSpec } from "../src/tensor/params.ts";
import { Rng } from "../src/tensor/rng.ts";
import type { Graph, Tensor } from "../src/tensor/symbolic.ts";
import { LoadMonitor, load1, median, peerBlasWarning, peerEnv, timeRuns, waitIdle } from "./timing.ts";

interface ConvCase {
  kind: "conv";
  name: string;
  x: readonly [number, number, number, number];
  out: number;
  kernel: number;
  pad: number;
  stride: number;
}
interface MatmulCase {
  kind: "matmul";
  name: string;
  m: number;
  k: number;
  n: number;
}
interface AttentionCase {
  kind: "attention";
  name: string;
  batch: number;
  tokens: number;
  width: number;
  heads: number;
}
interface GroupNormCase {
  kind: "groupnorm";
  name: string;
  x: readonly [number, number, number, number];
  groups: number;
}
export type Case = ConvCase | MatmulCase | AttentionCase | GroupNormCase;

const conv3x3 = (n: number, c: number, hw: number): ConvCase => ({
  kind: "conv",
  name: `conv3x3 [${n},${c},${hw},${hw}]`,
  x: [n, c, hw, hw],
  out: c,
  kernel: 3,
  pad: 1,
  stride: 1,
});

/** The cases; engine_peer.py receives this list as JSON, so both sides run the same shapes. */
export const CASES: readonly Case[] = [
  conv3x3(64, 64, 16),
  conv3x3(64, 128, 8),
  conv3x3(64, 32, 32),
  { kind: "matmul", name: "matmul 1024x1024x1024", m: 1024, k: 1024, n: 1024 },
  { kind: "attention", name: "attention [64,64 tok,64] 4 heads", batch: 64, tokens: 64, width: 64, heads: 4 },
  { kind: "groupnorm", name: "groupnorm [64,64,16,16] 32 groups", x: [64, 64, 16, 16], groups: 32 },
];

/** Forward FLOPs (see the header for the conventions). */
export function forwardFlop(c: Case): number {
  switch (c.kind) {
    case "conv": {
      const [n, ch, h, w] = c.x;
      const ho = Math.floor((h + 2 * c.pad - c.kernel) / c.stride) + 1;
      const wo = Math.floor((w + 2 * c.pad - c.kernel) / c.stride) + 1;
      return 2 * n * c.out * ch * c.kernel * c.kernel * ho * wo;
    }
    case "matmul":
      return 2 * c.m * c.k * c.n;
    case "attention": {
      const tokens = c.batch * c.tokens;
      return 4 * 2 * tokens * c.width * c.width + 2 * 2 * c.batch * c.tokens * c.tokens * c.width;
    }
    case "groupnorm":
      return 7 * c.x.reduce((p, q) => p * q, 1);
  }
}

/** Declares the case's data inputs, builds its forward pass; weights come from `p`. */
function forward(c: Case, g: Graph, p: ParamScope): Tensor {
  switch (c.kind) {
    case "conv":
      return conv2d(p, g.input("x", c.x), c.out, c.kernel, { padding: c.pad, stride: c.stride });
    case "matmul":
      return o.matmul(g.input("a", [c.m, c.k]), g.input("b", [c.k, c.n]));
    case "attention":
      return multiHeadAttention(p, g.input("x", [c.batch, c.tokens, c.width]), { heads: c.heads });
    case "groupnorm":
      return groupNorm(p, g.input("x", c.x), c.groups);
  }
}

interface Built {
  fwd: CompiledGraph;
  fwdBwd: CompiledGraph;
  fwdFeeds: Record<string, HostTensor>;
  fwdBwdFeeds: Record<string, HostTensor>;
}

function randomHost(shape: readonly number[], rng: Rng): HostTensor {
  return new HostTensor(
    rng.normal(
      shape.reduce((p, q) => p * q, 1),
      0,
      1,
    ),
    shape,
  );
}

/** Both sessions of a case, with their feeds. */
export async function build(c: Case, opts: SessionOptions): Promise<Built> {
  const rng = new Rng(7);
  let specs: ParamSpec[] = [];
  const bwdTrace = trace({}, (_t, g) => {
    const p = ParamScope.root(g);
    const y = forward(c, g, p);
    specs = p.specs;
    const r = g.input("r", y.shape);
    const loss = o.sum(o.mul(y, r));
    const wrt = g.inputs.filter((t) => t.inputName !== "r");
    const gs = grad(loss, wrt);
    return { loss, ...Object.fromEntries(wrt.map((t, i) => [`d_${t.inputName}`, gs[i]!])) };
  });
  const params = initParams(specs, rng.fold("params"));
  // the forward as inference runs it: weights embedded as constants (UNet2DModel does this)
  const fwdTrace = trace({}, (_t, g) => ({ y: forward(c, g, ParamScope.frozen(g, params)) }));
  const feeds: Record<string, HostTensor> = {};
  for (const t of bwdTrace.graph.inputs) {
    const name = t.inputName!;
    feeds[name] = params.get(name) ?? randomHost(t.shape, rng.fold(name));
  }
  const pick = (names: readonly string[]) => Object.fromEntries(names.map((n) => [n, feeds[n]!]));
  return {
    fwd: await compileGraph(fwdTrace.graph, fwdTrace.outputs, opts),
    fwdBwd: await compileGraph(bwdTrace.graph, bwdTrace.outputs, opts),
    fwdFeeds: pick(fwdTrace.graph.inputs.map((t) => t.inputName!)),
    fwdBwdFeeds: pick(bwdTrace.graph.inputs.map((t) => t.inputName!)),
  };
}

type Mode = "fwd" | "fwd_bwd";
/** Milliseconds by case name and mode. */
type PerCase = Record<string, Record<Mode, number>>;
const MODES: readonly Mode[] = ["fwd", "fwd_bwd"];

/** Median milliseconds per case and mode, plus the cores other processes used meanwhile. */
interface SideResult {
  ms: PerCase;
  /** Median CPU milliseconds of the process per run (all threads). */
  cpuMs: PerCase;
  otherCores: number;
}

async function runOurs(cases: readonly Case[], opts: SessionOptions, warmup: number, iters: number) {
  const ms: PerCase = {};
  const cpuMs: PerCase = {};
  const mon = new LoadMonitor();
  const others: number[] = [];
  for (const c of cases) {
    const b = await build(c, opts);
    if (c === cases[0])
      console.log(`diffuse sessions through ${b.fwd.binding} (DIFFUSE_CAPI=0: onnxruntime-node)`);
    mon.start();
    const fwd = await timeRuns(() => b.fwd.run(b.fwdFeeds), warmup, iters);
    const bwd = await timeRuns(() => b.fwdBwd.run(b.fwdBwdFeeds), warmup, iters);
    others.push(mon.stop());
    b.fwd.dispose();
    b.fwdBwd.dispose();
    ms[c.name] = { fwd: fwd.medianMs, fwd_bwd: bwd.medianMs };
    cpuMs[c.name] = { fwd: median(fwd.cpuMs), fwd_bwd: median(bwd.cpuMs) };
  }
  return { ms, cpuMs, otherCores: Math.max(...others) } satisfies SideResult;
}

const PYTHON = "/usr/bin/python3";
const PEER = join(dirname(fileURLToPath(import.meta.url)), "engine_peer.py");
const JEMALLOC = "libjemalloc.so.2";
const TUNED_ENV = {
  LD_PRELOAD: JEMALLOC,
  MALLOC_CONF: "dirty_decay_ms:-1,muzzy_decay_ms:-1",
  OMP_WAIT_POLICY: "PASSIVE",
};

interface PeerOutput {
  torch: string;
  threads: number;
  cases: {
    name: string;
    fwd: { median_s: number; cpu_median_s: number };
    fwd_bwd: { median_s: number; cpu_median_s: number };
    other_cores: number;
  }[];
}

/** Why the peer cannot run, or null when python3-torch imports. */
function peerMissing(): string | null {
  if (!existsSync(PYTHON)) return `${PYTHON} not found`;
  const r = spawnSync(PYTHON, ["-c", "import torch"], { encoding: "utf8" });
  return r.status === 0 ? null : `python3-torch is not installed (${r.stderr.trim().split("\n").pop()})`;
}

function runPeer(
  cases: readonly Case[],
  env: Record<string, string>,
  threads: number,
  warmup: number,
  iters: number,
): SideResult & { torch: string } {
  const r = spawnSync(
    PYTHON,
    [PEER, "--threads", `${threads}`, "--warmup", `${warmup}`, "--iters", `${iters}`],
    { input: JSON.stringify(cases), encoding: "utf8", env: peerEnv(env), maxBuffer: 1 << 26 },
  );
  if (r.status !== 0) throw new Error(`engine_peer.py failed (status ${r.status}):\n${r.stderr}`);
  if (/cannot be preloaded/.test(r.stderr))
    throw new Error(`${JEMALLOC} could not be preloaded:\n${r.stderr}`);
  const out = JSON.parse(r.stdout.trim().split("\n").pop()!) as PeerOutput;
  const ms: PerCase = {};
  const cpuMs: PerCase = {};
  for (const c of out.cases) {
    ms[c.name] = { fwd: c.fwd.median_s * 1e3, fwd_bwd: c.fwd_bwd.median_s * 1e3 };
    cpuMs[c.name] = { fwd: c.fwd.cpu_median_s * 1e3, fwd_bwd: c.fwd_bwd.cpu_median_s * 1e3 };
  }
  return { ms, cpuMs, otherCores: Math.max(...out.cases.map((c) => c.other_cores)), torch: out.torch };
}

/** Per case and mode, the median over repeats. */
/** Per case and mode, the median over repeats of wall (`ms`) or CPU (`cpuMs`) milliseconds. */
function medianOver(results: readonly SideResult[], cases: readonly Case[], key: "ms" | "cpuMs"): PerCase {
  const out: PerCase = {};
  for (const c of cases) {
    out[c.name] = {
      fwd: median(results.map((r) => r[key][c.name]!.fwd)),
      fwd_bwd: median(results.map((r) => r[key][c.name]!.fwd_bwd)),
    };
  }
  return out;
}

/** Prints ours, the default peer and the tuned peer side by side (GFLOP/s for wall times). */
function printTable(
  cases: readonly Case[],
  unit: string,
  o: PerCase,
  d: PerCase | null,
  t: PerCase | null,
): void {
  const flops = unit === "ms";
  const header = ["case", "mode", `diffuse ${unit}`, ...(flops ? ["GFLOP/s"] : [])];
  if (d) header.push(`torch ${unit}`, ...(flops ? ["GFLOP/s"] : []), "×torch");
  if (t) header.push(`tuned ${unit}`, ...(flops ? ["GFLOP/s"] : []), "×tuned");
  const rows: string[][] = [header];
  for (const c of cases) {
    for (const m of MODES) {
      const flop = forwardFlop(c) * (m === "fwd" ? 1 : 3);
      const cell = (v: number) => [fmt(v), ...(flops ? [fmt(flop / v / 1e6, 1)] : [])];
      const ours = o[c.name]![m];
      const row = [c.name, m === "fwd" ? "fwd" : "fwd+bwd", ...cell(ours)];
      for (const p of [d, t]) if (p) row.push(...cell(p[c.name]![m]), fmt(p[c.name]![m] / ours));
      rows.push(row);
    }
  }
  const widths = header.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  console.log("");
  for (const r of rows)
    console.log(r.map((v, i) => (i < 2 ? v.padEnd(widths[i]!) : v.padStart(widths[i]!))).join("  "));
}

const geomean = (xs: readonly number[]): number =>
  Math.exp(xs.reduce((s, x) => s + Math.log(x), 0) / xs.length);

/** The summary ratios (peer time / our time; above 1 = diffuse is faster). */
export function summary(cases: readonly Case[], ours: PerCase, peer: PerCase): Record<string, number> {
  const ratio = (c: Case, m: Mode) => peer[c.name]![m] / ours[c.name]![m];
  const of = (kind: Case["kind"], m: Mode) => {
    const rs = cases.filter((c) => c.kind === kind).map((c) => ratio(c, m));
    return rs.length > 0 ? geomean(rs) : Number.NaN;
  };
  return {
    conv_fwd: of("conv", "fwd"),
    conv_fwd_bwd: of("conv", "fwd_bwd"),
    matmul: of("matmul", "fwd"),
    attention_fwd_bwd: of("attention", "fwd_bwd"),
    groupnorm_fwd_bwd: of("groupnorm", "fwd_bwd"),
  };
}

function flag(args: readonly string[], name: string, dflt: string): string {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : dflt;
}

const fmt = (v: number, digits = 2) => (Number.isFinite(v) ? v.toFixed(digits) : "n/a");

export async function main(args: readonly string[]): Promise<void> {
  const iters = Number(flag(args, "iters", "20"));
  const warmup = Number(flag(args, "warmup", "3"));
  const threads = Number(flag(args, "threads", "2"));
  const repeats = Number(flag(args, "repeats", "1"));
  const only = flag(args, "only", "");
  const jsonFile = flag(args, "json", "");
  const waitS = Number(flag(args, "wait-idle", "0"));
  const spin = !args.includes("--no-spin");
  const cases = CASES.filter((c) => c.name.includes(only));
  const missing = args.includes("--no-peer") ? "--no-peer" : peerMissing();

  if (waitS > 0) {
    const waited = await waitIdle(waitS);
    console.log(`waited ${waited.toFixed(0)} s for the machine to go idle`);
  }
  const startLoad = load1();
  console.log(
    `engine bench: ${threads} threads${spin ? "" : " (not spinning)"}, warm-up ${warmup}, median of ${iters}, ${repeats} repeat(s); load average ${startLoad.toFixed(2)}`,
  );
  if (missing) console.log(`PyTorch peer not run: ${missing}. diffuse's figures alone.`);
  const blas = missing ? null : peerBlasWarning();
  if (blas) console.log(`warning: ${blas}`);

  const ours: SideResult[] = [];
  const dflt: SideResult[] = [];
  const tuned: SideResult[] = [];
  let torchVersion = "";
  for (let r = 0; r < repeats; r++) {
    ours.push(await runOurs(cases, { threads, spin }, warmup, iters));
    if (!missing) {
      const d = runPeer(cases, {}, threads, warmup, iters);
      torchVersion = d.torch;
      dflt.push(d);
      tuned.push(runPeer(cases, TUNED_ENV, threads, warmup, iters));
    }
    const busy = [ours, dflt, tuned].map((s) => (s.length > r ? s[r]!.otherCores.toFixed(2) : "-"));
    console.log(
      `repeat ${r + 1}/${repeats}: other processes used up to ${busy.join(" / ")} cores (ours / default / tuned)`,
    );
  }

  const o = medianOver(ours, cases, "ms");
  const d = missing ? null : medianOver(dflt, cases, "ms");
  const t = missing ? null : medianOver(tuned, cases, "ms");
  printTable(cases, "ms", o, d, t);
  console.log(
    "\nCPU time of each process per run (all its threads; steadier than wall time on a busy machine):",
  );
  printTable(
    cases,
    "cpu ms",
    medianOver(ours, cases, "cpuMs"),
    missing ? null : medianOver(dflt, cases, "cpuMs"),
    missing ? null : medianOver(tuned, cases, "cpuMs"),
  );
  console.log(`\nload average ${startLoad.toFixed(2)} at the start, ${load1().toFixed(2)} at the end`);
  if (jsonFile) {
    const result = {
      date: new Date().toISOString(),
      threads,
      iters,
      warmup,
      repeats,
      torch: torchVersion,
      cases,
      ours,
      dflt,
      tuned,
    };
    writeFileSync(jsonFile, `${JSON.stringify(result, null, 1)}\n`);
  }
  const line = (s: Record<string, number>) =>
    Object.entries(s)
      .map(([k, v]) => `${k}=${fmt(v)}`)
      .join(" ");
  if (!d || !t) {
    console.log("engine vs pytorch: not measured (no PyTorch peer)");
    return;
  }
  console.log(`PyTorch ${torchVersion}; ratios = PyTorch time / diffuse time (above 1 = diffuse faster)`);
  console.log(`vs default peer: ${line(summary(cases, o, d))}`);
  console.log(`vs tuned peer (jemalloc, OMP_WAIT_POLICY=PASSIVE):`);
  console.log(`engine vs pytorch: ${line(summary(cases, o, t))}`);
}
