// A stand-in for the CLI's entry (test/runtime/hugepages.test.ts, lifeline.test.ts): relaunches like
// bin/diffuse.js, then reports its environment, counts the signals it gets and ends with the code
// asked for. PROBE_FOLLOW_PARENT=1: end with the parent (as `diffuse serve`); PROBE_NO_HANDLERS=1:
// no signal handlers (a signal ends it at once); PROBE_STUCK=1: its main thread then spins forever,
// as a computation that never yields would.
import { withHugePages } from "../../bin/hugepages.js";

await withHugePages({ followParent: process.env.PROBE_FOLLOW_PARENT === "1" });
const got = [];
if (process.env.PROBE_NO_HANDLERS !== "1")
  for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => got.push(sig));
const [code, waitMs] = [Number(process.argv[2] ?? 0), Number(process.argv[3] ?? 0)];
console.log(
  JSON.stringify({
    pid: process.pid,
    ppid: process.ppid,
    tunables: process.env.GLIBC_TUNABLES ?? null,
    nodeOptions: process.env.NODE_OPTIONS ?? null,
    relaunched: Boolean(process.env.DIFFUSE_RELAUNCHED),
  }),
);
if (process.env.PROBE_STUCK === "1") {
  const until = Date.now() + 60_000;
  while (Date.now() < until) {
    // stuck: no event loop turn, so no signal handler, timer or IPC message runs
  }
}
setTimeout(() => {
  console.log(JSON.stringify({ signals: got }));
  process.exitCode = code;
}, waitMs);
