/**
 * The studio's job queue: a bounded FIFO in front of one sampling worker thread. Submitting to a
 * full queue throws QueueFullError (answered 429); cancelling a queued job drops it, cancelling the
 * running one tells the worker, which stops before the next network evaluation. The worker is
 * started on the first job, kept warm (its models and compiled graphs stay loaded, up to a memory
 * budget: sample-job.ts) and restarted if it dies. Finished jobs measure the machine's sampling rate
 * (job-budget.ts), which the next jobs' time estimates use.
 */
import { randomUUID } from "node:crypto";
import { BroadcastChannel } from "node:worker_threads";
import { runInWorker } from "../runtime/worker.ts";
import { Throughput } from "./job-budget.ts";
import type { JobEstimate } from "./job-cost.ts";
import type { FromWorker, SampleSpec, ToWorker } from "./protocol.ts";

export type JobEvent =
  | { type: "queued"; id: string; position: number }
  | { type: "start" }
  | { type: "step"; i: number; steps: number; t: number; x: Uint8Array; x0: Uint8Array }
  | { type: "done"; png: Uint8Array; apng: Uint8Array; ms: number }
  | { type: "failed"; message: string; cancelled: boolean };

export class QueueFullError extends Error {
  override name = "QueueFullError";
}

interface Job {
  id: string;
  spec: SampleSpec;
  /** Its estimated memory and MACs (null: not estimated, the worker then counts no memory for it). */
  estimate: JobEstimate | null;
  listener: (ev: JobEvent) => void;
  /** The worker it was handed to. */
  worker?: SamplerWorker;
}

function workerModule(): URL {
  const ext = import.meta.url.endsWith(".ts") ? ".ts" : ".js";
  return new URL(`./sample-job${ext}`, import.meta.url);
}

/** One live worker: its channel, readiness and the job it runs. */
class SamplerWorker {
  readonly channel: BroadcastChannel;
  readonly ready: Promise<void>;
  readonly finished: Promise<void>;
  private readonly stopper = new AbortController();

  constructor(cacheBytes: number, onMessage: (m: FromWorker) => void) {
    const name = `diffuse-studio-${randomUUID()}`;
    this.channel = new BroadcastChannel(name);
    let markReady: () => void = () => {};
    this.ready = new Promise<void>((r) => {
      markReady = r;
    });
    this.finished = runInWorker<{ channel: string; cacheBytes: number }, FromWorker, void>(
      workerModule(),
      "serveSampling",
      { channel: name, cacheBytes },
      {
        signal: this.stopper.signal,
        killAfterMs: 5000,
        onMessage: (m) => {
          if (m.kind === "ready") markReady();
          else onMessage(m);
        },
      },
    ).finally(() => this.channel.close());
  }

  send(m: ToWorker): void {
    this.channel.postMessage(m);
  }

  stop(): void {
    this.send({ kind: "stop" });
    this.stopper.abort();
  }
}

export interface QueueOptions {
  /** Jobs that may wait behind the running one (default 8). */
  capacity?: number;
  /** Memory the worker may keep in compiled graphs and loaded models (bytes; default 2 GiB). */
  cacheBytes?: number;
}

export class SamplingQueue {
  readonly capacity: number;
  readonly cacheBytes: number;
  /** The machine's sampling rate, measured by finished jobs. */
  readonly throughput = new Throughput();
  private readonly waiting: Job[] = [];
  private running: Job | null = null;
  private worker: SamplerWorker | null = null;
  private closed = false;

  constructor(opts: QueueOptions = {}) {
    this.capacity = opts.capacity ?? 8;
    this.cacheBytes = opts.cacheBytes ?? 2 * 2 ** 30;
  }

  /** Jobs waiting, and whether one is running. */
  get stats(): { waiting: number; running: boolean; capacity: number } {
    return { waiting: this.waiting.length, running: this.running !== null, capacity: this.capacity };
  }

  /** Whether a job submitted now would be refused. */
  get full(): boolean {
    return this.closed || this.waiting.length >= this.capacity;
  }

  /**
   * Queues a job; events arrive through `listener` (the first, "queued", before this returns) until
   * a "done" or "failed" event. Returns the job's id.
   */
  submit(spec: SampleSpec, estimate: JobEstimate | null, listener: (ev: JobEvent) => void): string {
    if (this.closed) throw new QueueFullError("the studio is shutting down");
    if (this.waiting.length >= this.capacity) {
      throw new QueueFullError(
        `the studio is busy: ${this.waiting.length} generations are already waiting (the queue holds ${this.capacity}); try again in a moment`,
      );
    }
    const job: Job = { id: randomUUID(), spec, estimate, listener };
    this.waiting.push(job);
    listener({ type: "queued", id: job.id, position: this.waiting.length });
    this.pump();
    return job.id;
  }

  /** Cancels a queued or running job (a no-op for unknown or finished ids). */
  cancel(id: string): void {
    const k = this.waiting.findIndex((j) => j.id === id);
    if (k >= 0) {
      const [job] = this.waiting.splice(k, 1);
      job!.listener({ type: "failed", message: "generation was cancelled", cancelled: true });
      this.announcePositions();
      return;
    }
    if (this.running?.id === id) this.worker?.send({ kind: "cancel", id });
  }

  /** Cancels everything and stops the worker. */
  async close(): Promise<void> {
    this.closed = true;
    for (const job of this.waiting.splice(0)) {
      job.listener({ type: "failed", message: "the studio is shutting down", cancelled: true });
    }
    const w = this.worker;
    this.worker = null;
    if (w) {
      w.stop();
      await w.finished.catch(() => {});
    }
  }

  private announcePositions(): void {
    for (const [k, j] of this.waiting.entries()) j.listener({ type: "queued", id: j.id, position: k + 1 });
  }

  private pump(): void {
    if (this.running || this.closed) return;
    const job = this.waiting.shift();
    if (!job) return;
    this.running = job;
    this.announcePositions();
    void this.dispatch(job);
  }

  private async dispatch(job: Job): Promise<void> {
    const w = this.workerFor();
    job.worker = w;
    try {
      await Promise.race([w.ready, w.finished]);
    } catch {
      // the worker died while starting; its `finished` handler fails the job
      return;
    }
    if (this.running !== job) return;
    w.send({ kind: "job", id: job.id, spec: job.spec, estimate: job.estimate });
  }

  private workerFor(): SamplerWorker {
    if (!this.worker) {
      const w = new SamplerWorker(this.cacheBytes, (m) => this.onWorkerMessage(m));
      this.worker = w;
      w.finished.then(
        () => this.onWorkerExit(w, "the sampling worker stopped"),
        (e: Error) => this.onWorkerExit(w, `the sampling worker failed: ${e.message}`),
      );
    }
    return this.worker;
  }

  private onWorkerExit(w: SamplerWorker, message: string): void {
    if (this.worker === w) this.worker = null;
    const job = this.running;
    // a worker stopped for recycling is idle; one that dies takes its job down with it
    if (job && job.worker === w) this.finish(job.id, message, false);
  }

  private finish(id: string, message: string | null, cancelled: boolean, done?: FromWorker): void {
    const job = this.running;
    if (!job || job.id !== id) return;
    this.running = null;
    if (done && done.kind === "done") {
      if (job.estimate) this.throughput.observe(job.estimate.macs, done.ms);
      job.listener({ type: "done", png: done.png, apng: done.apng, ms: done.ms });
    } else job.listener({ type: "failed", message: message ?? "generation failed", cancelled });
    this.pump();
  }

  private onWorkerMessage(m: FromWorker): void {
    if (m.kind === "ready") return;
    const job = this.running;
    if (!job || job.id !== m.id) return;
    if (m.kind === "start") job.listener({ type: "start" });
    else if (m.kind === "step") {
      job.listener({ type: "step", i: m.i, steps: m.steps, t: m.t, x: m.x, x0: m.x0 });
    } else if (m.kind === "done") this.finish(m.id, null, false, m);
    else this.finish(m.id, m.message, m.cancelled);
  }
}
