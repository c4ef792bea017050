/**
 * The side-by-side harness of the model benchmarks (mnist, dit): our train step and sampling loop,
 * each timed in a child process of its own (so its peak RSS is its own), against a Python peer run
 * twice — with the default allocator (the floor) and tuned (jemalloc without decay, OMP passive; the
 * one to beat, as ../shared/bench/README.md says) — R rounds in turn, so the machine's slow and fast
 * minutes fall on every side alike. Each figure is the median over the rounds. Ends with
 * `<name> vs <peer>: train=<speed ratio> sample=<speed ratio> rss=<ours/peer peak RSS>`.
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { availableParallelism } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { LoadMonitor, load1, median, peerBlasWarning, peerEnv, waitIdle } from "./timing.ts";

const here = dirname(fileURLToPath(import.meta.url));
/** The peers' folder: the project's shared/bench beside the repository. */
export const SHARED = join(here, "..", "..", "shared", "bench");
export const PYTHON = "/usr/bin/python3";
export const TUNED_ENV = {
  LD_PRELOAD: "libjemalloc.so.2",
  MALLOC_CONF: "dirty_decay_ms:-1,muzzy_decay_ms:-1",
  OMP_WAIT_POLICY: "PASSIVE",
};

export type Mode = "train" | "sample";

export interface Opts {
  iters: number;
  sampleIters: number;
  /** Steps of one sampling loop (default 50; fewer for a quicker run: the loop is the network, step by step). */
  sampleSteps: number;
  threads: number;
  waitIdle: number;
  repeats: number;
  child?: Mode;
}

export function parseOpts(bench: string, args: readonly string[]): Opts {
  const o: Opts = {
    iters: 10,
    sampleIters: 2,
    sampleSteps: 50,
    threads: availableParallelism(),
    waitIdle: 0,
    repeats: 1,
  };
  for (let i = 0; i < args.length; i += 2) {
    const [k, v] = [args[i], args[i + 1]];
    const n = Number(v);
    if (k === "--child" && (v === "train" || v === "sample")) o.child = v;
    else if (k === "--iters" && n >= 1) o.iters = n;
    else if (k === "--sample-iters" && n >= 1) o.sampleIters = n;
    else if (k === "--sample-steps" && Number.isInteger(n) && n >= 2) o.sampleSteps = n;
    else if (k === "--threads" && n >= 1) o.threads = n;
    else if (k === "--wait-idle" && n >= 0) o.waitIdle = n;
    else if (k === "--repeats" && Number.isInteger(n) && n >= 1) o.repeats = n;
    else
      throw new Error(
        `bench ${bench}: bad option ${k} ${v ?? ""} (options: --iters N, --sample-iters N, --sample-steps N, --threads N, --wait-idle S, --repeats R)`,
      );
  }
  return o;
}

export interface ChildResult {
  medianS: number;
  timesS: number[];
  imagesPerS: number;
  peakRssMiB: number;
  otherCores: number;
}

export interface PeerResult {
  median_s: number;
  images_per_s: number;
  peak_rss_mib: number;
  other_procs_cpu_cores: number;
}

const peakRss = (): number => process.resourceUsage().maxRSS / 1024;

/** Times `run` (after `warmup`) `iters` times in this process: the child's result line. */
export async function timeChild(
  batch: number,
  iters: number,
  warmup: () => Promise<unknown>,
  run: (i: number) => Promise<unknown>,
): Promise<ChildResult> {
  await warmup();
  const times: number[] = [];
  const mon = new LoadMonitor();
  mon.start();
  for (let i = 0; i < iters; i++) {
    const t0 = performance.now();
    await run(i);
    times.push((performance.now() - t0) / 1000);
  }
  const m = median(times);
  return { medianS: m, timesS: times, imagesPerS: batch / m, peakRssMiB: peakRss(), otherCores: mon.stop() };
}

/** The options as the flags a child benchmark process is started with. */
export const optArgs = (o: Opts): string[] => [
  "--iters",
  `${o.iters}`,
  "--sample-iters",
  `${o.sampleIters}`,
  "--sample-steps",
  `${o.sampleSteps}`,
  "--threads",
  `${o.threads}`,
];

/** Runs this benchmark file again as a child for one mode; returns its result line. */
function runChild(file: string, mode: Mode, o: Opts): ChildResult {
  const args = optArgs(o);
  const r = spawnSync(process.execPath, ["--import", "tsx", file, "--child", mode, ...args], {
    encoding: "utf8",
    maxBuffer: 1 << 24,
  });
  if (r.status !== 0) throw new Error(`bench ${mode} failed:\n${r.stderr}`);
  return JSON.parse(r.stdout.trim().split("\n").pop()!) as ChildResult;
}

/** The peers' arguments that follow from the mode (both peer scripts take the same flags). */
export function peerModeArgs(mode: Mode, o: Opts): string[] {
  return [
    "--mode",
    mode,
    "--threads",
    `${o.threads}`,
    ...(mode === "sample"
      ? ["--steps", `${o.sampleSteps}`, "--cfg", "3", "--iters", `${o.sampleIters}`]
      : ["--iters", `${o.iters}`]),
  ];
}

/** Runs a peer script with its arguments; the last stdout line is its JSON result. */
export function runPeerScript(
  script: string,
  args: readonly string[],
  env: Record<string, string>,
): PeerResult {
  const r = spawnSync(PYTHON, [join(SHARED, script), ...args, "--json"], {
    encoding: "utf8",
    env: peerEnv(env),
    maxBuffer: 1 << 24,
  });
  if (r.status !== 0) throw new Error(`${script} ${args.join(" ")} failed:\n${r.stderr}`);
  return JSON.parse(r.stdout.trim().split("\n").pop()!) as PeerResult;
}

/** Why the peer cannot run here, or null. */
export function peerMissing(script: string): string | null {
  if (!existsSync(join(SHARED, script)))
    return `the peer is not at ${join(SHARED, script)} (it lives in the project's shared/bench)`;
  const r = spawnSync(PYTHON, ["-c", "import torch"], { encoding: "utf8" });
  return r.status === 0
    ? null
    : "python3-torch is not installed (apt-get install python3-torch; see shared/bench/README.md)";
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
  return {
    medianS: median(rs.map((r) => r.medianS)),
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

export interface Comparison {
  /** The benchmark's name, first word of the summary line ("mnist", "dit"). */
  name: string;
  /** The peer's name in the summary line ("pytorch", "diffusers"). */
  peerName: string;
  /** The benchmark module's own file (run again as a child per mode). */
  file: string;
  /** The peer script in ../shared/bench and its arguments for a mode. */
  peerScript: string;
  peerArgs(mode: Mode, o: Opts): string[];
  /** Our side of a mode, in the child process. */
  child(mode: Mode, o: Opts): Promise<ChildResult>;
}

/** The whole benchmark: the child's part when called with --child, else the rounds and the summary. */
export async function compare(c: Comparison, args: readonly string[]): Promise<void> {
  const o = parseOpts(c.name, args);
  if (o.child) {
    console.log(JSON.stringify(await c.child(o.child, o)));
    return;
  }
  if (o.waitIdle > 0) console.log(`waited ${(await waitIdle(o.waitIdle)).toFixed(0)} s for an idle machine`);
  console.log(
    `date ${new Date().toISOString()}, threads ${o.threads}, sampling loops of ${o.sampleSteps} steps, load ${load1().toFixed(2)}`,
  );
  const missing = peerMissing(c.peerScript);
  if (missing) console.log(`no ${c.peerName} comparison: ${missing}`);
  else {
    const blas = peerBlasWarning();
    if (blas) console.log(`warning: ${blas}`);
  }
  const fmt = (s: number, ips: number, rss: number, others: number) =>
    `${s.toFixed(3)} s  ${ips.toFixed(2)} img/s  peak RSS ${rss.toFixed(0)} MiB  (others ${others.toFixed(2)} cores)`;
  const show = (tag: string, who: string, mode: Mode, r: ChildResult | PeerResult) => {
    const [s, ips, rss, others] =
      "medianS" in r
        ? [r.medianS, r.imagesPerS, r.peakRssMiB, r.otherCores]
        : [r.median_s, r.images_per_s, r.peak_rss_mib, r.other_procs_cpu_cores];
    console.log(`${tag}${who.padEnd(17)} ${mode.padEnd(6)} ${fmt(s, ips, rss, others)}`);
  };
  const peer = (mode: Mode, env: Record<string, string>) =>
    runPeerScript(c.peerScript, c.peerArgs(mode, o), env);
  const rounds: Round[] = [];
  for (let r = 0; r < o.repeats; r++) {
    const round: Round = {
      ours: { train: runChild(c.file, "train", o), sample: runChild(c.file, "sample", o) },
    };
    if (!missing) {
      round.default = { train: peer("train", {}), sample: peer("sample", {}) };
      round.tuned = { train: peer("train", TUNED_ENV), sample: peer("sample", TUNED_ENV) };
    }
    rounds.push(round);
    const tag = o.repeats > 1 ? `[${r + 1}/${o.repeats}] ` : "";
    for (const mode of ["train", "sample"] as const) show(tag, "diffuse", mode, round.ours[mode]);
    for (const name of ["default", "tuned"] as const) {
      for (const mode of ["train", "sample"] as const) {
        const q = round[name]?.[mode];
        if (q) show(tag, `${c.peerName} ${name}`, mode, q);
      }
    }
    if (round.tuned && o.repeats > 1) console.log(`${tag}this round: ${ratios(round.ours, round.tuned)}`);
  }
  if (missing) return;
  const ours = {
    train: medianChild(rounds.map((r) => r.ours.train)),
    sample: medianChild(rounds.map((r) => r.ours.sample)),
  };
  const peers = (name: "default" | "tuned") => ({
    train: medianPeer(rounds.map((r) => r[name]!.train)),
    sample: medianPeer(rounds.map((r) => r[name]!.sample)),
  });
  if (o.repeats > 1) {
    console.log(`medians over ${o.repeats} rounds:`);
    for (const mode of ["train", "sample"] as const) show("", "diffuse", mode, ours[mode]);
    for (const name of ["default", "tuned"] as const)
      for (const mode of ["train", "sample"] as const)
        show("", `${c.peerName} ${name}`, mode, peers(name)[mode]);
  }
  console.log(`vs the default peer (the floor): ${ratios(ours, peers("default"))}`);
  console.log(`${c.name} vs ${c.peerName}: ${ratios(ours, peers("tuned"))}`);
}
