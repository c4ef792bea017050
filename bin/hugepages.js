// Transparent huge pages for diffuse's processes (Linux, glibc).
//
// ONNX Runtime takes its working memory from malloc. With glibc's `glibc.malloc.hugetlb=1` tunable,
// malloc asks the kernel for transparent huge pages on its large blocks: far fewer page faults and
// TLB misses. Measured on a 2-core AVX2 machine: the MNIST U-Net train step in ~0.93× the time, a
// 3×3 convolution on [64,32,32,32] in ~0.73× (docs/benchmarks.md). glibc reads its tunables when the
// process starts, so the CLI (and `npm run bench`) start themselves once more with it set.
// The relaunch also caps V8's young generation, which is sized at start as well (young-generation.js).
//
// The relaunched process runs in its own process group: every signal reaches it exactly once, through
// this one (a Ctrl-C in the terminal reaches only this process, which passes it on). This process
// stays idle, so it can always act (lifeline.js): a relaunched process whose main thread does not
// answer within PING_MS of a signal is stuck in a computation that would never see the signal, and
// is killed outright, as is one still running SIGTERM_DEADLINE_MS after a SIGTERM (or a second
// Ctrl-C's QUIT_DEADLINE_MS). If this process dies without passing anything on (SIGKILL), the
// relaunched one ends too: its IPC channel closes, and a watchdog thread sees its parent change even
// while its main thread is stuck. A command that must not outlive whoever started it (`diffuse
// serve` under `npm start`, whose shell wrapper may die alone) asks for `followParent`: this process
// then stops the relaunched one as on SIGTERM when its own parent goes away.
// DIFFUSE_HUGEPAGES=0 turns the relaunch off (a process that follows its parent then watches it itself).
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { answerPings, pingChild, startWatchdog, watchParent } from "./lifeline.js";
import { withYoungGenerationCap } from "./young-generation.js";

const MARK = "DIFFUSE_RELAUNCHED";
const TUNABLE = "glibc.malloc.hugetlb=1";
const FORWARDED = ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGWINCH"];
/** Signals that ask the process to end: after each, the relaunched one must show it is not stuck. */
const ENDING = new Set(["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT"]);
/** How long a relaunched process has to answer a ping after an ending signal. */
const PING_MS = 3000;
/** How long a relaunched process may take to end after a SIGTERM (or SIGHUP, or its parent's end). */
const SIGTERM_DEADLINE_MS = 15000;
/** … and after a second Ctrl-C ("quit now"). */
const QUIT_DEADLINE_MS = 3000;

function thpAvailable() {
  try {
    return !readFileSync("/sys/kernel/mm/transparent_hugepage/enabled", "utf8").includes("[never]");
  } catch {
    return false;
  }
}

/** Whether this process should start itself again with the tunable set. */
export function shouldRelaunch(env = process.env) {
  if (process.platform !== "linux" || env.DIFFUSE_HUGEPAGES === "0" || env[MARK]) return false;
  if ((env.GLIBC_TUNABLES ?? "").includes("glibc.malloc.hugetlb")) return false;
  // a debugger or profiler attached to this process would watch a launcher that only waits
  const flags = [...process.execArgv, env.NODE_OPTIONS ?? ""].join(" ");
  if (/--(inspect|prof|cpu-prof|heap-prof)/.test(flags)) return false;
  if (!thpAvailable()) return false;
  // musl and other C libraries ignore glibc's tunables: relaunching would only cost a start
  return Boolean(process.report?.getReport?.().header?.glibcVersionRuntime);
}

/**
 * Runs this same command again (same Node.js flags, script and arguments) with the tunable set, passes
 * signals on and ends this process as the relaunched one ends (same exit code or signal). Returns only
 * when the relaunch could not start (this process then goes on as it is). With `followParent`, the
 * relaunched process is stopped (as on SIGTERM) when this one's parent goes away.
 */
export async function relaunch({ followParent = false } = {}) {
  const env = { ...process.env, [MARK]: "1" };
  env.GLIBC_TUNABLES = [process.env.GLIBC_TUNABLES, TUNABLE].filter(Boolean).join(":");
  // V8's heap is sized at start too: the relaunch is where its young generation is capped
  env.NODE_OPTIONS = withYoungGenerationCap(process.env.NODE_OPTIONS, process.execArgv);
  const child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
    stdio: ["inherit", "inherit", "inherit", "ipc"],
    env,
    detached: true,
  });
  // the signal that made this process kill the relaunched one: it ends by that signal, not SIGKILL
  let cause = null;
  const timers = new Set();
  const kill = (sig) => {
    cause ??= sig;
    child.kill("SIGKILL");
  };
  const deadline = (sig, ms) => {
    const t = setTimeout(() => kill(sig), ms);
    timers.add(t);
  };
  let interrupts = 0;
  const end = (sig) => {
    child.kill(sig);
    timers.add(pingChild(child, PING_MS, () => kill(sig)));
    if (sig === "SIGINT" && ++interrupts >= 2) deadline(sig, QUIT_DEADLINE_MS);
    else if (sig === "SIGTERM" || sig === "SIGHUP") deadline(sig, SIGTERM_DEADLINE_MS);
  };
  const stopWatching = followParent ? watchParent(() => end("SIGTERM")) : () => {};
  const handlers = FORWARDED.map((sig) => [sig, () => (ENDING.has(sig) ? end(sig) : child.kill(sig))]);
  // Ctrl-Z stops this process; the relaunched one, in its own group, is stopped and continued with it
  handlers.push(
    [
      "SIGTSTP",
      () => {
        child.kill("SIGSTOP");
        process.kill(process.pid, "SIGSTOP");
      },
    ],
    ["SIGCONT", () => child.kill("SIGCONT")],
  );
  for (const [sig, fn] of handlers) process.on(sig, fn);
  const { code, signal, error } = await new Promise((resolve) => {
    child.once("error", (e) => resolve({ error: e }));
    child.once("exit", (c, s) => resolve({ code: c, signal: s }));
  });
  stopWatching();
  for (const t of timers) {
    if (typeof t === "function") t();
    else clearTimeout(t);
  }
  if (error) {
    for (const [sig, fn] of handlers) process.off(sig, fn);
    return;
  }
  const sig = signal === "SIGKILL" && cause ? cause : signal;
  if (sig) {
    process.removeAllListeners(sig);
    process.kill(process.pid, sig);
  }
  process.exit(code ?? 1);
}

/**
 * In a relaunched process: end when the launching process is gone (its IPC channel closes, or — seen
 * by a watchdog thread even while this one is stuck — this process is re-parented), and answer the
 * launcher's pings.
 */
export function followLauncher() {
  if (!process.env[MARK] || !process.channel) return;
  answerPings();
  process.once("disconnect", () => process.kill(process.pid, "SIGKILL"));
  startWatchdog({ graceMs: 0 });
}

/**
 * The steps in one: relaunch where it pays, else follow the launcher if there is one. With
 * `followParent`, the process (the launcher, or this one where nothing is relaunched) ends when its
 * parent goes away.
 */
export async function withHugePages({ followParent = false } = {}) {
  if (shouldRelaunch()) await relaunch({ followParent });
  if (process.env[MARK] && process.channel) followLauncher();
  // a process without a launcher watches its parent itself: SIGTERM (its graceful stop), then SIGKILL
  else if (followParent) startWatchdog({ graceMs: SIGTERM_DEADLINE_MS });
}
