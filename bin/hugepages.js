// Transparent huge pages for diffuse's processes (Linux, glibc).
//
// ONNX Runtime takes its working memory from malloc. With glibc's `glibc.malloc.hugetlb=1` tunable,
// malloc asks the kernel for transparent huge pages on its large blocks: far fewer page faults and
// TLB misses. Measured on a 2-core AVX2 machine: the MNIST U-Net train step in ~0.93× the time, a
// 3×3 convolution on [64,32,32,32] in ~0.73× (docs/benchmarks.md). glibc reads its tunables when the
// process starts, so the CLI (and `npm run bench`) start themselves once more with it set.
//
// The relaunched process runs in its own process group: every signal reaches it exactly once, through
// this one (a Ctrl-C in the terminal reaches only this process, which passes it on). If this process
// dies without passing anything on (SIGKILL), the relaunched one sees its IPC channel close and ends
// too. DIFFUSE_HUGEPAGES=0 turns all of it off.
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";

const MARK = "DIFFUSE_RELAUNCHED";
const TUNABLE = "glibc.malloc.hugetlb=1";
const FORWARDED = ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGWINCH"];

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
 * when the relaunch could not start (this process then goes on as it is).
 */
export async function relaunch() {
  const env = { ...process.env, [MARK]: "1" };
  env.GLIBC_TUNABLES = [process.env.GLIBC_TUNABLES, TUNABLE].filter(Boolean).join(":");
  const child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
    stdio: ["inherit", "inherit", "inherit", "ipc"],
    env,
    detached: true,
  });
  const handlers = FORWARDED.map((sig) => [sig, () => child.kill(sig)]);
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
  if (error) {
    for (const [sig, fn] of handlers) process.off(sig, fn);
    return;
  }
  if (signal) {
    process.removeAllListeners(signal);
    process.kill(process.pid, signal);
  }
  process.exit(code ?? 1);
}

/** In a relaunched process: end when the launching process is gone (its IPC channel closes). */
export function followLauncher() {
  if (!process.env[MARK] || !process.channel) return;
  process.channel.unref();
  process.once("disconnect", () => process.kill(process.pid, "SIGKILL"));
}

/** The two steps in one: relaunch where it pays, else follow the launcher if there is one. */
export async function withHugePages() {
  if (shouldRelaunch()) await relaunch();
  followLauncher();
}
