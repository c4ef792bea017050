/**
 * Summarises an ONNX Runtime profile (the JSON a session writes when DIFFUSE_PROFILE=<prefix> is set,
 * runtime/options.ts): time per operator type and the slowest nodes, over the runs it holds (the
 * first `--skip` runs, the warm-up, left out).
 *
 *   DIFFUSE_PROFILE=/tmp/prof node --import tsx <a script that runs graphs>
 *   node --import tsx scripts/profile-summary.ts /tmp/prof_<date>.json [--skip 1] [--top 15]
 */
import { readFileSync } from "node:fs";

interface Event {
  cat: string;
  name: string;
  dur: number;
  ts: number;
  args?: { op_name?: string; provider?: string };
}

const [file, ...rest] = process.argv.slice(2);
if (!file) throw new Error("usage: profile-summary.ts <profile.json> [--skip N] [--top N]");
const flag = (name: string, dflt: number) => {
  const i = rest.indexOf(`--${name}`);
  return i >= 0 ? Number(rest[i + 1]) : dflt;
};
const skip = flag("skip", 1);
const top = flag("top", 15);

const events = JSON.parse(readFileSync(file, "utf8")) as Event[];
const runs = events.filter((e) => e.cat === "Session" && e.name === "model_run");
if (runs.length === 0) throw new Error(`${file}: no model_run events (is it an ONNX Runtime profile?)`);
const kept = runs.slice(Math.min(skip, runs.length - 1));
const from = kept[0]!.ts;
const nodes = events.filter((e) => e.cat === "Node" && e.name.endsWith("_kernel_time") && e.ts >= from);
const runTime = kept.reduce((a, r) => a + r.dur, 0);
const nodeTime = nodes.reduce((a, e) => a + e.dur, 0);

const byOp = new Map<string, { us: number; count: number }>();
const byNode = new Map<string, { op: string; us: number }>();
for (const e of nodes) {
  const op = e.args?.op_name ?? "?";
  const o = byOp.get(op) ?? { us: 0, count: 0 };
  o.us += e.dur;
  o.count++;
  byOp.set(op, o);
  const name = e.name.slice(0, -"_kernel_time".length);
  const n = byNode.get(name) ?? { op, us: 0 };
  n.us += e.dur;
  byNode.set(name, n);
}
const ms = (us: number) => (us / 1000 / kept.length).toFixed(1).padStart(9);
const pct = (us: number) => `${((100 * us) / nodeTime).toFixed(1).padStart(5)}%`;
console.log(
  `${file}: ${kept.length} runs (${skip} skipped), ${ms(runTime).trim()} ms a run, nodes ${ms(nodeTime).trim()} ms (${((100 * nodeTime) / runTime).toFixed(0)}% of the run)`,
);
console.log("\nby operator (ms a run, share of node time, nodes a run)");
for (const [op, o] of [...byOp].sort((a, b) => b[1].us - a[1].us).slice(0, top))
  console.log(`${op.padEnd(28)}${ms(o.us)} ${pct(o.us)} ${String(o.count / kept.length).padStart(6)}`);
console.log("\nslowest nodes");
for (const [name, n] of [...byNode].sort((a, b) => b[1].us - a[1].us).slice(0, top))
  console.log(`${name.slice(0, 60).padEnd(62)}${n.op.padEnd(20)}${ms(n.us)} ${pct(n.us)}`);
