/**
 * Timing helpers shared by the benchmarks: warm-up then the median of N runs, and a record of how busy
 * the (shared) machine was meanwhile — the CPU time other processes used, from /proc/stat minus our own.
 */
import { readFileSync, realpathSync } from "node:fs";
import { loadavg } from "node:os";

export interface Timing {
  medianMs: number;
  minMs: number;
  timesMs: number[];
  /** CPU time of this process (all threads) per run: less disturbed by other processes than wall time. */
  cpuMs: number[];
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Runs `fn` `warmup` times untimed, then `iters` times timed. */
export async function timeRuns(fn: () => Promise<unknown>, warmup: number, iters: number): Promise<Timing> {
  for (let i = 0; i < warmup; i++) await fn();
  const timesMs: number[] = [];
  const cpuMs: number[] = [];
  for (let i = 0; i < iters; i++) {
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    await fn();
    timesMs.push(Number(process.hrtime.bigint() - t0) / 1e6);
    const c = process.cpuUsage(c0);
    cpuMs.push((c.user + c.system) / 1e3);
  }
  return { medianMs: median(timesMs), minMs: Math.min(...timesMs), timesMs, cpuMs };
}

/** Busy CPU seconds of the whole machine (all cores) so far. */
function machineBusyS(): number {
  const line = readFileSync("/proc/stat", "utf8").split("\n")[0]!;
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
  return (total - v[3]! - v[4]!) / 100; // minus idle and iowait; USER_HZ is 100 on Linux
}

/** CPU seconds of this process (all its threads, ONNX Runtime's included). */
function ownS(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** Measures, between `start` and `stop`, how many cores other processes kept busy. */
export class LoadMonitor {
  private t0 = 0;
  private busy0 = 0;
  private own0 = 0;

  start(): void {
    this.t0 = performance.now();
    this.busy0 = machineBusyS();
    this.own0 = ownS();
  }

  /** Cores used by other processes on average since `start` (our own children count as others). */
  stop(): number {
    const wall = (performance.now() - this.t0) / 1000;
    const other = machineBusyS() - this.busy0 - (ownS() - this.own0);
    return wall > 0 ? Math.max(0, other / wall) : 0;
  }
}

/** The 1-minute load average, for the log. */
export const load1 = (): number => loadavg()[0]!;

/**
 * Waits until other processes leave the machine idle (under `thresh` cores busy in two successive
 * `windowS` windows), at most `maxS` seconds; returns the seconds waited.
 */
export async function waitIdle(maxS: number, thresh = 0.15, windowS = 3): Promise<number> {
  const t0 = performance.now();
  const mon = new LoadMonitor();
  let quiet = 0;
  while ((performance.now() - t0) / 1000 < maxS) {
    mon.start();
    await new Promise((r) => setTimeout(r, windowS * 1000));
    quiet = mon.stop() < thresh ? quiet + 1 : 0;
    if (quiet >= 2) break;
  }
  return (performance.now() - t0) / 1000;
}

/**
 * A warning when Debian's PyTorch would run its matrix products on the reference BLAS (~3 GFLOP/s
 * here): the peer is then not at its best. Null when an optimized BLAS (OpenBLAS, BLIS, MKL) is
 * what libblas.so.3 resolves to, or when this is not a Debian-style system.
 */
export function peerBlasWarning(): string | null {
  let target: string;
  try {
    target = realpathSync("/usr/lib/x86_64-linux-gnu/libblas.so.3");
  } catch {
    return null;
  }
  if (!/\/blas\/libblas/.test(target)) return null;
  return `PyTorch's BLAS is the reference BLAS (${target}): its matmuls run far below its best; apt-get install libopenblas0-pthread for the peer at its best (docs/benchmarks.md)`;
}

/**
 * The environment for a PyTorch peer process: this process's, without what bin/hugepages.js added for
 * diffuse (glibc's huge-page tunable), plus `extra`. The peer runs at the settings its README names.
 */
export function peerEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  if (env["DIFFUSE_RELAUNCHED"]) {
    const rest = (env["GLIBC_TUNABLES"] ?? "").split(":").filter((t) => t && t !== "glibc.malloc.hugetlb=1");
    if (rest.length > 0) env["GLIBC_TUNABLES"] = rest.join(":");
    else delete env["GLIBC_TUNABLES"];
    delete env["DIFFUSE_RELAUNCHED"];
  }
  return env;
}
