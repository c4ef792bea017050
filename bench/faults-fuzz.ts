/**
 * Fault harness (b): a fuzzer over the readers and validators that take outside data
 * (faults-fuzz-targets.ts), each target's inputs run in a worker thread while this thread keeps time:
 * an input that takes longer than the limit is a hang (the worker is terminated and the run goes on
 * from the next input); an input that grows the RSS by more than MAX_INPUT_MB is an unbounded
 * allocation. Everything else is accepted or rejected with a one-line message, or it is a crash.
 */
import { runInWorker } from "../src/runtime/worker.ts";
import { type InputResult, TARGETS, type TargetName } from "./faults-fuzz-targets.ts";

/** An input that grows the RSS more than this (MB) is reported as an unbounded allocation. */
const MAX_INPUT_MB = 256;

export interface FuzzOptions {
  /** Inputs per target (≥ 10,000 for the bar). */
  inputs: number;
  /** Per-input time limit (ms). */
  limitMs?: number;
  seed?: number;
  targets?: readonly TargetName[];
}

export interface TargetReport {
  target: TargetName;
  inputs: number;
  accepted: number;
  rejected: number;
  crashes: number;
  hangs: number;
  bigAllocations: number;
  /** Slowest input (ms) and the 99th percentile. */
  maxMs: number;
  p99Ms: number;
  /** Largest RSS growth of one input (MB). */
  maxMb: number;
  /** Up to 10 failures: the input's index and what went wrong. */
  failures: string[];
  seconds: number;
}

const moduleUrl = new URL(
  `./faults-fuzz-targets${import.meta.url.endsWith(".ts") ? ".ts" : ".js"}`,
  import.meta.url,
);

async function fuzzTarget(target: TargetName, opts: FuzzOptions): Promise<TargetReport> {
  const t0 = performance.now();
  const limitMs = opts.limitMs ?? 2000;
  const r: TargetReport = {
    target,
    inputs: 0,
    accepted: 0,
    rejected: 0,
    crashes: 0,
    hangs: 0,
    bigAllocations: 0,
    maxMs: 0,
    p99Ms: 0,
    maxMb: 0,
    failures: [],
    seconds: 0,
  };
  const times: number[] = [];
  const fail = (what: string) => {
    if (r.failures.length < 10) r.failures.push(what);
  };
  let next = 0;
  while (next < opts.inputs) {
    const ac = new AbortController();
    let last = performance.now();
    let started = false;
    const onMessage = (m: InputResult) => {
      started = true;
      last = performance.now();
      next = m.i + 1;
      r.inputs++;
      times.push(m.ms);
      r.maxMs = Math.max(r.maxMs, m.ms);
      r.maxMb = Math.max(r.maxMb, m.mb);
      if (m.outcome === "accepted") r.accepted++;
      else if (m.outcome === "rejected") r.rejected++;
      else {
        r.crashes++;
        fail(`input ${m.i}: ${m.message}`);
      }
      if (m.mb > MAX_INPUT_MB) {
        r.bigAllocations++;
        fail(`input ${m.i}: the RSS grew by ${Math.round(m.mb)} MB`);
      }
    };
    // the first input waits for the worker's start-up (loading modules, making fixtures) too
    const watch = setInterval(() => {
      if (performance.now() - last > (started ? limitMs : limitMs + 60_000)) ac.abort();
    }, 50);
    try {
      await runInWorker<{ target: TargetName; seed: number; start: number; end: number }, InputResult, void>(
        moduleUrl,
        "fuzzLoop",
        { target, seed: opts.seed ?? 1, start: next, end: opts.inputs },
        { onMessage, signal: ac.signal, killAfterMs: 0 },
      );
    } catch (e) {
      if (!ac.signal.aborted) {
        // the worker died: the input it was on crashed it
        r.inputs++;
        r.crashes++;
        fail(`input ${next}: the worker died: ${(e as Error).message.split("\n")[0]}`);
      } else {
        r.inputs++;
        r.hangs++;
        fail(`input ${next}: still running after ${limitMs} ms`);
      }
      next++;
    } finally {
      clearInterval(watch);
    }
  }
  times.sort((a, b) => a - b);
  r.p99Ms = times[Math.floor(0.99 * (times.length - 1))] ?? 0;
  r.seconds = (performance.now() - t0) / 1000;
  return r;
}

export async function fuzz(opts: FuzzOptions): Promise<TargetReport[]> {
  const out: TargetReport[] = [];
  for (const t of opts.targets ?? TARGETS) out.push(await fuzzTarget(t, opts));
  return out;
}
