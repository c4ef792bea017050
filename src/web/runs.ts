/**
 * Training runs as the studio reads them: `diffuse train` appends one JSON line per log step to
 * metrics.jsonl (step, loss, lr, grad_norm, img_per_s, time) and writes sample grids to
 * samples/step-NNNNNN.png. A watcher tails both and pushes new rows and grids as Server-Sent Events;
 * a resumed run trims metrics.jsonl, which the watcher answers with a reset.
 */
import {
  closeSync,
  existsSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  realpathSync,
  statSync,
} from "node:fs";
import { join, relative, sep } from "node:path";
import type { RunInfo } from "./catalog.ts";
import { type EventStream, HttpError } from "./http.ts";

export interface MetricRow {
  step: number;
  loss: number;
  lr?: number;
  grad_norm?: number;
  img_per_s?: number;
  time?: number;
}

/** Most bytes of metrics read in one go (a 6000-step run logging every step is about 1 MB). */
const MAX_READ = 16 * 1024 * 1024;
const SAMPLE_NAME = /^step-\d{1,9}\.png$/;

/** Rows of metrics.jsonl from byte `offset` on; a trailing line still being written is left for later. */
export function readMetrics(
  dir: string,
  offset: number,
): { rows: MetricRow[]; offset: number; reset: boolean } {
  const path = join(dir, "metrics.jsonl");
  if (!existsSync(path) || !statSync(path).isFile()) return { rows: [], offset: 0, reset: offset > 0 };
  const size = statSync(path).size;
  const reset = size < offset;
  const from = reset ? 0 : offset;
  if (size === from) return { rows: [], offset: from, reset };
  const n = Math.min(size - from, MAX_READ);
  const buf = Buffer.alloc(n);
  const fd = openSync(path, "r");
  try {
    readSync(fd, buf, 0, n, from);
  } finally {
    closeSync(fd);
  }
  const end = buf.lastIndexOf(10); // "\n"
  if (end < 0) return { rows: [], offset: from, reset };
  const rows: MetricRow[] = [];
  for (const line of buf.subarray(0, end).toString("utf8").split("\n")) {
    try {
      const r = JSON.parse(line) as Partial<MetricRow>;
      if (typeof r.step === "number" && typeof r.loss === "number") rows.push(r as MetricRow);
    } catch {
      // a damaged line: skip it
    }
  }
  return { rows, offset: from + end + 1, reset };
}

/** The run's sample grids, oldest first. */
export function sampleNames(dir: string): string[] {
  const d = join(dir, "samples");
  if (!existsSync(d)) return [];
  return readdirSync(d)
    .filter((n) => SAMPLE_NAME.test(n))
    .sort();
}

/** The path of a sample grid, refusing names that are not grids and files that resolve outside the run (symlinks). */
export function samplePath(run: RunInfo, name: string): string {
  if (!SAMPLE_NAME.test(name)) {
    throw new HttpError(400, `"${name}" is not a sample grid name (samples are named like step-000500.png)`);
  }
  const p = join(run.dir, "samples", name);
  // (a folder named like a grid is no grid either)
  if (!existsSync(p) || !statSync(p).isFile())
    throw new HttpError(404, `run "${run.id}" has no sample ${name}`);
  const root = realpathSync(run.dir);
  const rel = relative(root, realpathSync(p));
  if (rel.startsWith(`..${sep}`) || rel === ".." || rel.startsWith(sep)) {
    throw new HttpError(403, `sample ${name} points outside run "${run.id}"`);
  }
  return p;
}

/** A summary for the run list: config steps, last logged step and loss, latest grid. */
export function runSummary(run: RunInfo): Record<string, unknown> {
  let steps: number | null = null;
  let dataset: string | null = null;
  try {
    const cfg = JSON.parse(readFileSync(join(run.dir, "config.json"), "utf8")) as {
      training?: { steps?: unknown };
      data?: { dataset?: unknown };
    };
    if (typeof cfg.training?.steps === "number") steps = cfg.training.steps;
    if (typeof cfg.data?.dataset === "string") dataset = cfg.data.dataset;
  } catch {
    // no config yet
  }
  const metrics = join(run.dir, "metrics.jsonl");
  const updated = existsSync(metrics) ? statSync(metrics).mtimeMs : null;
  const samples = sampleNames(run.dir);
  return {
    id: run.id,
    steps,
    dataset,
    updated,
    latestSample: samples.at(-1) ?? null,
    samples: samples.length,
  };
}

/**
 * Streams a run: a "reset" then "metrics" with every row so far and "samples" with the grid names;
 * afterwards new rows and grids as they appear (checked every `intervalMs`). Ends when the client goes.
 */
export function watchRun(run: RunInfo, stream: EventStream, intervalMs = 1000): void {
  let offset = 0;
  let lastSamples: string | null = null;
  const tick = () => {
    if (stream.isClosed) {
      clearInterval(timer);
      return;
    }
    try {
      const m = readMetrics(run.dir, offset);
      if (m.reset || lastSamples === null) {
        stream.send("reset", { run: runSummary(run) });
        lastSamples = null;
      }
      offset = m.offset;
      if (m.rows.length) stream.send("metrics", { rows: m.rows });
      const names = sampleNames(run.dir);
      const key = names.join(",");
      if (key !== lastSamples) {
        lastSamples = key;
        stream.send("samples", { names, run: runSummary(run) });
      }
    } catch (e) {
      stream.send("problem", { message: (e as Error).message });
    }
  };
  const timer = setInterval(tick, intervalMs);
  timer.unref();
  tick();
}
