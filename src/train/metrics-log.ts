/**
 * A run's metrics log, metrics.jsonl: one JSON object per line, each with its `step` (read by the
 * studio and by tests). A resumed run first drops the lines past its checkpoint's step, so the log
 * reads as if the run had never stopped.
 */
import { appendFileSync, existsSync, readFileSync } from "node:fs";
import { writeFileAtomic } from "../io/atomic.ts";

/** Appends one record (with the wall-clock time) as a line. */
export function appendMetrics(path: string, record: { step: number } & Record<string, unknown>): void {
  appendFileSync(path, `${JSON.stringify({ ...record, time: Date.now() })}\n`);
}

/** Drops the lines past `step` (and damaged lines), keeping the rest in order. */
export function trimMetrics(path: string, step: number): void {
  if (!existsSync(path)) return;
  const kept = readFileSync(path, "utf8")
    .split("\n")
    .filter((l) => {
      if (!l.trim()) return false;
      try {
        return (JSON.parse(l) as { step: number }).step <= step;
      } catch {
        return false;
      }
    });
  writeFileAtomic(path, kept.length ? `${kept.join("\n")}\n` : "");
}
