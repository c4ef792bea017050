/** The script every worker thread runs: import the requested module and call the requested export. */
import { parentPort, workerData } from "node:worker_threads";
import type { WorkerContext, WorkerReply, WorkerRequest } from "./worker.ts";

const port = parentPort;
if (!port) throw new Error("worker-entry must run in a worker thread");
const req = workerData as WorkerRequest;
const abort = new AbortController();
port.on("message", (m: { kind: string }) => {
  if (m.kind === "cancel") abort.abort();
});
const send = (r: WorkerReply) => port.postMessage(r);

try {
  const mod = (await import(req.moduleUrl)) as Record<string, unknown>;
  const fn = mod[req.exportName];
  if (typeof fn !== "function")
    throw new Error(`${req.moduleUrl} has no exported function ${req.exportName}`);
  const ctx: WorkerContext<unknown> = { post: (msg) => send({ kind: "message", msg }), signal: abort.signal };
  const result: unknown = await (fn as (a: unknown, c: WorkerContext<unknown>) => unknown)(req.args, ctx);
  send({ kind: "done", result });
} catch (e) {
  const err = e instanceof Error ? e : new Error(String(e));
  send({ kind: "error", message: err.message, ...(err.stack ? { stack: err.stack } : {}) });
}
port.close();
