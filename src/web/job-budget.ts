/**
 * The studio's resource budget, decided before a job is queued: a job whose estimated memory
 * (job-cost.ts: its compiled graphs and the model's weights) or time is over the server's budget is
 * refused with 422 and a message naming the field, the estimate, the limit and what would fit. The
 * sampling worker keeps compiled graphs up to the same memory budget (sample-job.ts), so the studio
 * holds at most about one job's worth of memory beyond its idle size, whatever sequence of jobs it ran.
 *
 * Defaults: a quarter of the machine's memory (or of the container's limit), as the JVM caps its
 * default heap, and 15 minutes of compute. The time is the job's multiply-accumulates over the
 * machine's rate: RATE_PER_CORE per core until jobs have run, then what the finished jobs measured.
 */
import { availableParallelism, totalmem } from "node:os";
import { HttpError } from "./http.ts";
import { estimateJob, type JobEstimate, type JobShape, type ModelCost } from "./job-cost.ts";

export interface JobBudget {
  /** The most memory one job may need (bytes), and what the worker's graph cache may hold. */
  readonly memoryBytes: number;
  /** The most time one job may take (seconds). */
  readonly seconds: number;
}

/** Multiply-accumulates per second per core before any job has been measured (2-core AVX2: ~8e9). */
const RATE_PER_CORE = 3e9;
/** Jobs shorter than this measure compiling more than running: they do not update the rate. */
const MIN_MEASURED_MS = 5000;

/** The memory a process may count on: the machine's, or a container's lower limit. */
export function machineMemory(): number {
  const limit = process.constrainedMemory?.() ?? 0;
  const total = totalmem();
  return limit > 0 && limit < total ? limit : total;
}

export function defaultBudget(): JobBudget {
  return { memoryBytes: Math.max(512 * 2 ** 20, Math.floor(machineMemory() / 4)), seconds: 15 * 60 };
}

/** "4G", "512M", "1.5g", "300000000" → bytes (binary units); throws on anything else. */
export function parseBytes(text: string, what: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$/i.exec(text);
  const unit = { "": 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 }[(m?.[2] ?? "").toLowerCase()];
  const bytes = m && unit ? Math.floor(Number(m[1]) * unit) : Number.NaN;
  if (!Number.isFinite(bytes) || bytes < 2 ** 20) {
    throw new Error(`${what} must be a size such as 4G or 512M (at least 1M), got "${text}"`);
  }
  return bytes;
}

/** "1.2 GB", "340 MB". */
export function formatBytes(n: number): string {
  return n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(1)} GB` : `${Math.ceil(n / 2 ** 20)} MB`;
}

/** "48 min", "30 s". */
export const formatSeconds = (s: number): string =>
  s >= 90 ? `${Math.round(s / 60)} min` : `${Math.max(1, Math.round(s))} s`;

/** The machine's sampling rate (MAC/s): a default per core, then the finished jobs' measure. */
export class Throughput {
  private rate = RATE_PER_CORE * availableParallelism();

  get macsPerSecond(): number {
    return this.rate;
  }

  /** Records a finished job: its estimated MACs and how long it took. */
  observe(macs: number, ms: number): void {
    if (ms < MIN_MEASURED_MS || macs <= 0) return;
    this.rate = 0.5 * this.rate + 0.5 * (macs / (ms / 1000));
  }
}

/** The largest n in [0, hi] for which `fits(n)` holds (fits is monotone: true up to some n). */
function largest(hi: number, fits: (n: number) => boolean): number {
  let lo = 0;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (fits(mid)) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/**
 * The job's estimate, or a 422 when it is over the budget: the message names the fields, the
 * estimate, the limit (and the flag that sets it) and what fits — the largest count at this size for
 * memory, the most steps for time.
 */
export function admitJob(
  cost: ModelCost,
  job: JobShape,
  budget: JobBudget,
  rate: number,
  modelId: string,
): JobEstimate {
  const bytesOf = (e: JobEstimate) => e.graphBytes + e.modelBytes;
  const est = estimateJob(cost, job);
  if (bytesOf(est) > budget.memoryBytes) {
    const count = largest(
      job.count - 1,
      (n) => n > 0 && bytesOf(estimateJob(cost, { ...job, count: n })) <= budget.memoryBytes,
    );
    throw new HttpError(
      422,
      `count ${job.count} at size ${job.size} needs about ${formatBytes(bytesOf(est))} of memory for model "${modelId}", over this studio's budget of ${formatBytes(budget.memoryBytes)} per job (diffuse serve --max-job-memory); ${count > 0 ? `at size ${job.size} count ${count} fits, or lower the size` : "lower the size"}`,
    );
  }
  const seconds = est.macs / rate;
  if (seconds > budget.seconds) {
    const steps = largest(
      job.steps - 1,
      (n) => n > 0 && estimateJob(cost, { ...job, steps: n }).macs / rate <= budget.seconds,
    );
    throw new HttpError(
      422,
      `steps ${job.steps} with count ${job.count} at size ${job.size} would take about ${formatSeconds(seconds)} for model "${modelId}" on this machine, over this studio's limit of ${formatSeconds(budget.seconds)} per job (diffuse serve --max-job-time); ${steps > 0 ? `steps ${steps} fits, or lower count or size` : "lower count or size"}`,
    );
  }
  return est;
}
