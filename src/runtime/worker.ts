/**
 * Long work off the main thread. ONNX Runtime's `run` blocks the thread it is called on, so training
 * and sampling run in a worker thread: `runInWorker(moduleUrl, "exportName", args, { onMessage,
 * signal })` imports the module in a fresh worker, calls the export with the arguments and a context
 * (to post progress and to see cancellation), and resolves with what it returns.
 *
 * Messages and results cross threads by structured clone: send plain objects and typed arrays
 * (a HostTensor arrives as `{ data, shape, dtype }`; rebuild it with `HostTensor.from`).
 */
import "./telemetry.ts";
import { Worker } from "node:worker_threads";

export interface WorkerContext<Msg> {
  /** Sends a progress message to the main thread. */
  post(msg: Msg): void;
  /** Aborted when the caller cancels the job (or its signal aborts). */
  readonly signal: AbortSignal;
}

export type WorkerFn<Args, Msg, Result> = (args: Args, ctx: WorkerContext<Msg>) => Promise<Result> | Result;

export interface RunInWorkerOptions<Msg> {
  onMessage?: (msg: Msg) => void;
  /** Aborting asks the job to stop (it sees ctx.signal); the promise then settles with what the job does. */
  signal?: AbortSignal;
  /** Kill the worker this long after a cancel if the job has not stopped (default: never). */
  killAfterMs?: number;
}

export interface WorkerRequest {
  moduleUrl: string;
  exportName: string;
  args: unknown;
}

export type WorkerReply =
  | { kind: "message"; msg: unknown }
  | { kind: "done"; result: unknown }
  | { kind: "error"; message: string; stack?: string };

/** The worker entry script, next to this file (.ts when running from source, .js once compiled). */
function entryUrl(): URL {
  const ext = import.meta.url.endsWith(".ts") ? ".ts" : ".js";
  return new URL(`./worker-entry${ext}`, import.meta.url);
}

/**
 * A tiny CommonJS bootstrap: when running from TypeScript sources (tests, `npm run` scripts) it
 * registers tsx's loader in the worker first, since loader hooks do not carry over into workers.
 */
const BOOTSTRAP = `
const { workerData } = require("node:worker_threads");
(async () => {
  if (workerData.entry.endsWith(".ts")) (await import("tsx/esm/api")).register();
  await import(workerData.entry);
})().catch((e) => { setImmediate(() => { throw e; }); });
`;

export function runInWorker<Args, Msg, Result>(
  moduleUrl: URL | string,
  exportName: string,
  args: Args,
  opts: RunInWorkerOptions<Msg> = {},
): Promise<Result> {
  return new Promise<Result>((resolve, reject) => {
    const request: WorkerRequest = { moduleUrl: String(moduleUrl), exportName, args };
    const worker = new Worker(BOOTSTRAP, { eval: true, workerData: { ...request, entry: entryUrl().href } });
    let settled = false;
    let killTimer: NodeJS.Timeout | undefined;
    const finish = (f: () => void) => {
      if (settled) return;
      settled = true;
      if (killTimer) clearTimeout(killTimer);
      opts.signal?.removeEventListener("abort", onAbort);
      f();
    };
    const onAbort = () => {
      worker.postMessage({ kind: "cancel" });
      if (opts.killAfterMs !== undefined) {
        killTimer = setTimeout(() => {
          void worker.terminate();
          finish(() =>
            reject(new Error("the job was cancelled and did not stop in time; its worker was terminated")),
          );
        }, opts.killAfterMs);
      }
    };
    if (opts.signal?.aborted) onAbort();
    else opts.signal?.addEventListener("abort", onAbort, { once: true });
    worker.on("message", (reply: WorkerReply) => {
      if (reply.kind === "message") opts.onMessage?.(reply.msg as Msg);
      else if (reply.kind === "done") finish(() => resolve(reply.result as Result));
      else {
        const e = new Error(reply.message);
        if (reply.stack) e.stack = reply.stack;
        finish(() => reject(e));
      }
    });
    worker.on("error", (e) => finish(() => reject(e)));
    worker.on("exit", (code) =>
      finish(() => reject(new Error(`worker exited with code ${code} before finishing its job`))),
    );
  });
}
