// Processes that cannot outlive whoever started them, and that end on SIGTERM/SIGINT even while their
// main thread is stuck in a long computation.
//
// Node.js runs signal handlers and IPC events on the main thread's event loop, so a main thread busy
// in a long synchronous computation sees neither a signal nor its launcher's death. What must work
// regardless runs elsewhere:
//   - a watchdog worker thread (its own event loop) polls the parent's pid: when the parent is gone
//     (the process was re-parented), it ends this process — SIGTERM first where a graceful stop is
//     wanted, SIGKILL after a grace period or at once;
//   - a launcher (hugepages.js's relaunch) is idle, so it always handles signals: it passes them on
//     and pings the relaunched process over IPC; no answer means the relaunched process's main thread
//     is stuck, and it is killed outright (SIGKILL), as it is when it outlasts a deadline.
import { Worker } from "node:worker_threads";

/** IPC messages between a launcher and the process it relaunched. */
export const PING = "diffuse:ping";
export const PONG = "diffuse:pong";

/** How often parents are checked. */
const POLL_MS = 250;

const WATCHDOG = `
const { workerData } = require("node:worker_threads");
const { ppid, graceMs, pollMs } = workerData;
const timer = setInterval(() => {
  if (process.ppid === ppid) return;
  clearInterval(timer);
  if (graceMs > 0) {
    process.kill(process.pid, "SIGTERM");
    setTimeout(() => process.kill(process.pid, "SIGKILL"), graceMs);
  } else process.kill(process.pid, "SIGKILL");
}, pollMs);
`;

/**
 * Ends this process when its parent goes away, even while the main thread is stuck: with SIGKILL at
 * once (graceMs 0), or SIGTERM and then SIGKILL after `graceMs`. A process whose parent is already
 * init (pid 1: started by a service manager, or already orphaned) has nothing to follow.
 */
export function startWatchdog({ graceMs = 0, pollMs = POLL_MS } = {}) {
  const ppid = process.ppid;
  if (ppid <= 1) return;
  const worker = new Worker(WATCHDOG, { eval: true, workerData: { ppid, graceMs, pollMs } });
  worker.unref();
}

/**
 * Calls `onGone` once when this process's parent goes away (polled on this thread: for a process whose
 * main thread stays idle, such as a launcher). Returns a function that stops watching.
 */
export function watchParent(onGone, pollMs = POLL_MS) {
  const ppid = process.ppid;
  if (ppid <= 1) return () => {};
  const timer = setInterval(() => {
    if (process.ppid === ppid) return;
    clearInterval(timer);
    onGone();
  }, pollMs);
  timer.unref();
  return () => clearInterval(timer);
}

/** In a relaunched process: answer the launcher's pings (on the main thread: a stuck one does not). */
export function answerPings() {
  if (!process.channel) return;
  process.on("message", (m) => {
    if (m && typeof m === "object" && m.kind === PING) process.send?.({ kind: PONG, id: m.id });
  });
  // the answers must not keep the process alive once its work is done
  process.channel.unref();
}

/**
 * In a launcher: asks `child` (over IPC) whether its main thread still runs; calls `onStuck` when no
 * answer comes within `ms`.
 */
export function pingChild(child, ms, onStuck) {
  const id = Math.random().toString(36).slice(2);
  const timer = setTimeout(() => {
    child.off("message", onMessage);
    onStuck();
  }, ms);
  const onMessage = (m) => {
    if (m && typeof m === "object" && m.kind === PONG && m.id === id) {
      clearTimeout(timer);
      child.off("message", onMessage);
    }
  };
  child.on("message", onMessage);
  // a closed channel (the child is ending) answers through the callback, not an "error" event
  if (child.connected) child.send({ kind: PING, id }, () => {});
  return () => {
    clearTimeout(timer);
    child.off("message", onMessage);
  };
}
