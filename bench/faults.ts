/**
 * `npm run bench -- faults`: the fault harness (issue 21). Not a timing: three checks that must find
 * nothing, with their figures.
 *   (a) kill   — SIGKILL a tiny training run at ≥ 20 random moments (launcher and child), resuming each
 *                time: every resume from its checkpoint, the run folder consistent after every kill,
 *                the finished run bit-identical to an uninterrupted one (faults-kill.ts);
 *   (b) fuzz   — ≥ 10,000 generated inputs each for the safetensors reader, model and pipeline
 *                configs, training configs with --set, scheduler configs and the studio's requests: no
 *                crash, hang or unbounded allocation, every rejection one line (faults-fuzz.ts);
 *   (c) load   — the studio under a bounded loopback load of mixed shapes for 5 minutes: every request
 *                answered, RSS within 1.5× idle + one job (faults-load.ts).
 * Flags: --kills N --steps N --inputs N --seconds S (the sizes above), --quick (a minute or so: what
 * test/bench/faults.test.ts runs), --only kill|fuzz|load. Exits 1 when anything failed.
 */
import { parseArgs } from "node:util";
import { type FuzzOptions, fuzz, type TargetReport } from "./faults-fuzz.ts";
import { type KillReport, killRuns } from "./faults-kill.ts";
import { type LoadReport, loadStudio } from "./faults-load.ts";

export interface FaultsOptions {
  kills: number;
  steps: number;
  inputs: number;
  seconds: number;
  only?: "kill" | "fuzz" | "load";
  verbose?: boolean;
  fuzz?: Partial<FuzzOptions>;
}

export interface FaultsReport {
  kill?: KillReport;
  fuzz?: TargetReport[];
  load?: LoadReport;
  failures: string[];
}

export const FULL: FaultsOptions = { kills: 20, steps: 400, inputs: 10_000, seconds: 300 };
export const QUICK: FaultsOptions = { kills: 2, steps: 12, inputs: 100, seconds: 6 };

export async function runFaults(o: FaultsOptions): Promise<FaultsReport> {
  const out: FaultsReport = { failures: [] };
  if (!o.only || o.only === "kill") {
    out.kill = await killRuns({ kills: o.kills, steps: o.steps, ...(o.verbose ? { verbose: true } : {}) });
    out.failures.push(...out.kill.failures.map((f) => `kill: ${f}`));
  }
  if (!o.only || o.only === "fuzz") {
    out.fuzz = await fuzz({ inputs: o.inputs, ...o.fuzz });
    for (const t of out.fuzz) out.failures.push(...t.failures.map((f) => `fuzz ${t.target}: ${f}`));
  }
  if (!o.only || o.only === "load") {
    out.load = await loadStudio({ seconds: o.seconds });
    out.failures.push(...out.load.failures.map((f) => `load: ${f}`));
  }
  return out;
}

/** The figures as the markdown of docs/benchmarks.md's "Reliability" section. */
export function formatFaults(r: FaultsReport): string {
  const lines: string[] = [];
  if (r.kill) {
    const k = r.kill;
    lines.push(
      `(a) kill: ${k.kills} SIGKILLs of a tiny training run (${k.launcherKills} of the launcher, ${k.childKills} of the relaunched child; ${k.startupKills} during start-up, ${k.kills - k.startupKills} while training), ${k.interruptedWrites} of them in the middle of a checkpoint or export write; ${k.resumes} resumes from the checkpoint; ${k.failures.length} inconsistencies; final weights ${k.failures.some((f) => f.includes("final")) ? "DIFFER from" : "bit-identical to"} the uninterrupted run (${k.seconds.toFixed(0)} s)`,
    );
  }
  if (r.fuzz) {
    lines.push(
      "",
      "(b) fuzz:",
      "",
      "| target | inputs | accepted | rejected (one line) | crashes | hangs | big allocations | slowest input | p99 | largest RSS growth |",
      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
      ...r.fuzz.map(
        (t) =>
          `| ${t.target} | ${t.inputs.toLocaleString("en-US")} | ${t.accepted} | ${t.rejected} | ${t.crashes} | ${t.hangs} | ${t.bigAllocations} | ${t.maxMs.toFixed(0)} ms | ${t.p99Ms.toFixed(1)} ms | ${t.maxMb.toFixed(1)} MB |`,
      ),
    );
  }
  if (r.load) {
    const l = r.load;
    lines.push(
      "",
      `(c) load: ${l.seconds.toFixed(0)} s, ${l.requests} generations (${l.done} done, ${l.cancelled} walked away from mid-stream, ${l.busy429} busy 429, ${l.bad400} bad 400, ${l.overBudget422} over-budget 422), ${l.infoPolls} /api/info polls (slowest ${l.maxInfoMs.toFixed(0)} ms); ${l.failures.length} unanswered or failed; RSS idle ${l.idleMb.toFixed(0)} MB, highest ${l.maxMb.toFixed(0)} MB, after ${l.finalMb.toFixed(0)} MB (bound 1.5 × idle + one job = ${l.boundMb.toFixed(0)} MB)`,
    );
  }
  if (r.failures.length) lines.push("", "FAILURES:", ...r.failures.map((f) => `- ${f}`));
  return lines.join("\n");
}

export async function main(args: readonly string[]): Promise<void> {
  const { values } = parseArgs({
    args: [...args],
    options: {
      kills: { type: "string" },
      steps: { type: "string" },
      inputs: { type: "string" },
      seconds: { type: "string" },
      only: { type: "string" },
      quick: { type: "boolean" },
      verbose: { type: "boolean" },
    },
  });
  const base = values.quick ? QUICK : FULL;
  const n = (v: string | undefined, d: number) => (v === undefined ? d : Number(v));
  const only = values.only as FaultsOptions["only"];
  if (only !== undefined && !["kill", "fuzz", "load"].includes(only))
    throw new Error(`--only takes kill, fuzz or load, got "${only}"`);
  const report = await runFaults({
    kills: n(values.kills, base.kills),
    steps: n(values.steps, base.steps),
    inputs: n(values.inputs, base.inputs),
    seconds: n(values.seconds, base.seconds),
    verbose: values.verbose ?? false,
    ...(only ? { only } : {}),
  });
  console.log(formatFaults(report));
  console.log(`\n${JSON.stringify(report)}`);
  if (report.failures.length) process.exitCode = 1;
}
