/**
 * Fault harness (a): a tiny training run (`diffuse train`, launcher and relaunched child) is killed
 * with SIGKILL at random moments — the launcher or the child, during start-up or while it trains,
 * checkpoints and exports — and resumed each time by running the same command again. After every kill
 * the run folder must read as a reader (or the resume) sees it: the checkpoint's weights and optimizer
 * state are those of the uninterrupted run at the checkpoint's step, model/ holds the uninterrupted
 * run's export of the step its diffuse.json names, every preview grid is the uninterrupted run's, and
 * the metrics lines up to the checkpoint match it. Every resume must start from the checkpoint, and
 * the finished run must equal the uninterrupted one bit for bit (weights, export, grids, losses).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { recoverReplacedDir } from "../src/io/atomic.ts";
import { Rng } from "../src/tensor/rng.ts";
import { exportedStep, type TrainEvent, trainRun } from "../src/train/trainer.ts";
import { peerEnv } from "./timing.ts";

const BIN = fileURLToPath(new URL("../bin/diffuse.js", import.meta.url));

export interface KillOptions {
  /** Kills to make before the run may finish (≥ 20 for the issue's bar). */
  kills: number;
  /** Training steps of the run (enough that it does not finish before the kills are made). */
  steps: number;
  seed?: number;
  /** Print a line per kill. */
  verbose?: boolean;
}

export interface KillReport {
  kills: number;
  /** Kills of the launcher (the child must follow it) and of the relaunched child. */
  launcherKills: number;
  childKills: number;
  /** Kills before training started (start-up, resume), and while it trained. */
  startupKills: number;
  /** Kills that left a folder half-swapped or half-written aside (a .tmp-/.old- sibling), all recovered. */
  interruptedWrites: number;
  /** Runs that resumed from their checkpoint's step (every run after a kill that had a checkpoint). */
  resumes: number;
  /** What did not hold (empty when all did). */
  failures: string[];
  seconds: number;
}

function tinyConfig(steps: number): Record<string, unknown> {
  return {
    model: {
      _class_name: "UNet2DModel",
      sample_size: 28,
      in_channels: 1,
      out_channels: 1,
      block_out_channels: [8, 8],
      layers_per_block: 1,
      down_block_types: ["DownBlock2D", "DownBlock2D"],
      up_block_types: ["UpBlock2D", "UpBlock2D"],
      norm_num_groups: 4,
      num_class_embeds: 11,
    },
    scheduler: { _class_name: "DDPMScheduler", num_train_timesteps: 1000, beta_schedule: "linear" },
    data: { dataset: "mnist", size: 28 },
    training: { steps, batch_size: 4, lr: 1e-3, warmup_steps: 0, seed: 11, threads: 1 },
    output: { checkpoint_every: 4, sample_every: 8, log_every: 1, sample_steps: 2 },
  };
}

const hash = (path: string) => createHash("sha256").update(readFileSync(path)).digest("hex").slice(0, 16);
const WEIGHTS = "diffusion_pytorch_model.safetensors";

interface Snapshot {
  checkpoint: Map<number, string>;
  model: Map<number, string>;
  samples: Map<string, string>;
  losses: Map<number, number>;
  /** How long the uninterrupted run took to start (load, compile) and to train, in ms: the kill moments scale with them. */
  startupMs: number;
  trainMs: number;
}

/** The checkpoint's step and a hash of its weights and optimizer state, or null without one. */
function checkpointState(run: string): { step: number; hash: string } | null {
  const dir = join(run, "checkpoint");
  if (!existsSync(join(dir, "trainer_state.json"))) return null;
  const step = (JSON.parse(readFileSync(join(dir, "trainer_state.json"), "utf8")) as { step: number }).step;
  return {
    step,
    hash: `${hash(join(dir, "unet", WEIGHTS))}/${hash(join(dir, "unet_ema", WEIGHTS))}/${hash(join(dir, "optimizer.safetensors"))}`,
  };
}

function modelState(run: string): { step: number; hash: string } | null {
  const dir = join(run, "model");
  if (!existsSync(dir)) return null;
  const step = exportedStep(dir);
  if (step === null) throw new Error("model/ has no readable diffuse.json");
  return { step, hash: hash(join(dir, "unet", WEIGHTS)) };
}

function readLosses(run: string): { losses: Map<number, number>; damaged: number; order: number[] } {
  const losses = new Map<number, number>();
  const order: number[] = [];
  let damaged = 0;
  const path = join(run, "metrics.jsonl");
  if (!existsSync(path)) return { losses, damaged, order };
  for (const line of readFileSync(path, "utf8").split("\n")) {
    if (!line.trim()) continue;
    try {
      const r = JSON.parse(line) as { step: number; loss: number };
      losses.set(r.step, r.loss);
      order.push(r.step);
    } catch {
      damaged++;
    }
  }
  return { losses, damaged, order };
}

/** The uninterrupted run, in this process, with every checkpoint and export it wrote. */
async function reference(config: Record<string, unknown>, run: string): Promise<Snapshot> {
  const snap: Snapshot = {
    checkpoint: new Map(),
    model: new Map(),
    samples: new Map(),
    losses: new Map(),
    startupMs: 0,
    trainMs: 0,
  };
  const t0 = performance.now();
  let firstLog: number | null = null;
  const look = () => {
    const c = checkpointState(run);
    if (c) snap.checkpoint.set(c.step, c.hash);
    const m = modelState(run);
    if (m) snap.model.set(m.step, m.hash);
  };
  const post = (e: TrainEvent) => {
    if (e.kind === "log") firstLog ??= performance.now();
    if (e.kind === "checkpoint" || e.kind === "log" || e.kind === "end") look();
  };
  await trainRun({ config, outDir: run }, { post, signal: new AbortController().signal });
  const t1 = performance.now();
  snap.startupMs = (firstLog ?? t1) - t0;
  snap.trainMs = t1 - (firstLog ?? t0);
  look();
  for (const f of readdirSync(join(run, "samples"))) snap.samples.set(f, hash(join(run, "samples", f)));
  snap.losses = readLosses(run).losses;
  return snap;
}

/** What does not match the reference in the run folder as a reader sees it now. */
function check(run: string, ref: Snapshot, final: boolean): string[] {
  const bad: string[] = [];
  const c = checkpointState(run);
  if (c && ref.checkpoint.get(c.step) !== c.hash) bad.push(`checkpoint at step ${c.step} differs`);
  const m = modelState(run);
  if (m && ref.model.get(m.step) !== m.hash) bad.push(`model/ says step ${m.step} but its weights differ`);
  if (c && m && m.step > c.step) bad.push(`model/ (step ${m.step}) is ahead of the checkpoint (${c.step})`);
  if (existsSync(join(run, "samples"))) {
    for (const f of readdirSync(join(run, "samples"))) {
      if (f.startsWith(".")) continue; // a temporary file of an interrupted write
      if (ref.samples.get(f) !== hash(join(run, "samples", f))) bad.push(`samples/${f} differs`);
    }
  }
  const { losses, damaged, order } = readLosses(run);
  if (damaged > 1) bad.push(`${damaged} damaged metrics lines`);
  for (const [step, loss] of losses) {
    if (c && step > c.step) continue; // past the checkpoint: the resume drops them
    if (ref.losses.get(step) !== loss)
      bad.push(`metrics step ${step}: loss ${loss} ≠ ${ref.losses.get(step)}`);
  }
  if (final) {
    const steps = [...ref.losses.keys()];
    if (order.join(",") !== steps.join(",")) bad.push("the metrics log is not one line per step");
    if (c?.hash !== ref.checkpoint.get(Math.max(...ref.checkpoint.keys())))
      bad.push("final weights differ from the uninterrupted run");
    for (const f of ref.samples.keys())
      if (!existsSync(join(run, "samples", f))) bad.push(`samples/${f} is missing`);
  }
  return bad;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** The relaunched child of `pid` (Linux: /proc), if any. */
function childOf(pid: number): number | null {
  try {
    const kids = readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8")
      .trim()
      .split(/\s+/)
      .filter(Boolean);
    return kids.length ? Number(kids[0]) : null;
  } catch {
    return null;
  }
}

export async function killRuns(opts: KillOptions): Promise<KillReport> {
  const t0 = performance.now();
  const rng = new Rng(opts.seed ?? 2026);
  const root = mkdtempSync(join(tmpdir(), "diffuse-faults-kill-"));
  const report: KillReport = {
    kills: 0,
    launcherKills: 0,
    childKills: 0,
    startupKills: 0,
    interruptedWrites: 0,
    resumes: 0,
    failures: [],
    seconds: 0,
  };
  try {
    const config = tinyConfig(opts.steps);
    const cfgPath = join(root, "tiny.json");
    writeFileSync(cfgPath, JSON.stringify(config));
    const ref = await reference(config, join(root, "reference"));
    const run = join(root, "run");
    // as a user's shell starts it: relaunched with huge pages (launcher + child), whatever this process is
    const env = peerEnv();
    let fresh = 0;
    for (let attempt = 0; ; attempt++) {
      const expectStep = checkpointState(run)?.step ?? null;
      const child: ChildProcess = spawn(process.execPath, [BIN, "train", "--config", cfgPath, "--out", run], {
        env,
        stdio: ["ignore", "pipe", "pipe"],
      });
      let out = "";
      const onData = (b: Buffer) => {
        out += b.toString();
      };
      child.stdout!.on("data", onData);
      child.stderr!.on("data", onData);
      const exit = new Promise<[number | null, string | null]>((r) => child.on("exit", (c, s) => r([c, s])));
      const started = () => /resuming .* at step \d+|training into/.test(out);
      let exited: [number | null, string | null] | null = null;
      void exit.then((e) => {
        exited = e;
      });
      if (report.kills < opts.kills) {
        // a quarter of the kills during start-up (loading, recovery, compiling), the rest while it trains
        // The moments scale with the uninterrupted run's own start-up and training times (measured in
        // this process on this machine), so a fast machine is hit as often as a slow one.
        const startup = rng.nextUniform() < 0.25;
        const spawned = performance.now();
        if (startup) await sleep(50 + rng.nextUniform() * (ref.startupMs + 400));
        else {
          while (!started() && !exited && performance.now() - spawned < 60_000) await sleep(5);
          const left = (opts.steps - (expectStep ?? 0)) / opts.steps;
          await sleep(rng.nextUniform() * 0.8 * ref.trainMs * left);
        }
        if (!exited) {
          const launcher = child.pid!;
          const inner = childOf(launcher);
          const hitLauncher = inner === null || rng.nextUniform() < 0.5;
          process.kill(hitLauncher ? launcher : inner!, "SIGKILL");
          await exit;
          const until = performance.now() + 5000;
          while (inner !== null && alive(inner) && performance.now() < until) await sleep(20);
          if (inner !== null && alive(inner)) {
            report.failures.push(`kill ${report.kills + 1}: the child outlived its killed launcher`);
            process.kill(inner, "SIGKILL");
          }
          report.kills++;
          if (hitLauncher) report.launcherKills++;
          else report.childKills++;
          if (!started()) report.startupKills++;
          const leftovers = existsSync(run)
            ? readdirSync(run).filter((n) => n.includes(".tmp-") || n.includes(".old-"))
            : [];
          if (leftovers.length) report.interruptedWrites++;
          // what a reader sees: a swap cut between its renames is put back as the resume does
          recoverReplacedDir(join(run, "checkpoint"));
          recoverReplacedDir(join(run, "model"));
          for (const f of check(run, ref, false)) report.failures.push(`after kill ${report.kills}: ${f}`);
          if (opts.verbose) {
            console.log(
              `kill ${report.kills}: ${hitLauncher ? "launcher" : "child"} ${started() ? "while training" : "at start-up"}; checkpoint ${checkpointState(run)?.step ?? "none"}, model ${modelState(run)?.step ?? "none"}${leftovers.length ? `; interrupted: ${leftovers.join(", ")}` : ""}`,
            );
          }
        }
      }
      const [code, signal] = await exit;
      if (expectStep !== null && started()) {
        if (out.includes(`at step ${expectStep}`)) report.resumes++;
        else
          report.failures.push(
            `attempt ${attempt + 1} did not resume at step ${expectStep}: ${out.slice(0, 300)}`,
          );
      }
      if (signal === "SIGKILL") continue;
      if (code !== 0) {
        report.failures.push(`attempt ${attempt + 1} failed with ${code ?? signal}: ${out.slice(-500)}`);
        break;
      }
      for (const f of check(run, ref, true)) report.failures.push(`finished run: ${f}`);
      if (report.kills < opts.kills) {
        // every kill this time came too late (the run outran it): start the run afresh, a few times
        if (++fresh <= 5) {
          rmSync(run, { recursive: true, force: true });
          continue;
        }
        report.failures.push(
          `the run finished ${fresh} times before ${opts.kills} kills; give it more steps`,
        );
      }
      break;
    }
  } finally {
    rmSync(root, { recursive: true, force: true });
    report.seconds = (performance.now() - t0) / 1000;
  }
  return report;
}
