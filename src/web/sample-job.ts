/**
 * The studio's sampling worker (runs in a worker thread through runInWorker, so ONNX Runtime's
 * blocking runs never stall the server). It keeps its models and their compiled graphs between
 * jobs, runs one job at a time, and streams every denoising step: the current sample x_t and the
 * network's clean-image estimate x̂0 = (x_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t, as PNG grids — for a latent
 * (text-to-image) model both decoded through its VAE, so the page shows images, not latents. At the
 * end it encodes the final grid (generation parameters in its text chunk) and the trajectory as an
 * animated PNG. Models and their compiled graphs stay cached between jobs up to a memory budget
 * (graph-cache.ts).
 */
import { BroadcastChannel } from "node:worker_threads";
import { encodeApng } from "../io/apng.ts";
import { makeGrid } from "../io/grid.ts";
import { encodePng } from "../io/png.ts";
import type { Raster } from "../io/raster.ts";
import { CancelledError, toUnitRange } from "../pipelines/generate.ts";
import { pipelineGenerate } from "../pipelines/run.ts";
import { schedulerFor } from "../pipelines/scheduler-names.ts";
import { setDefaultArena } from "../runtime/options.ts";
import type { WorkerContext } from "../runtime/worker.ts";
import { HostTensor } from "../tensor/host.ts";
import { GraphCache } from "./graph-cache.ts";
import type { JobEstimate } from "./job-cost.ts";
import type { FromWorker, SampleSpec, ToWorker } from "./protocol.ts";

/** At most this many frames in a trajectory animation (long runs keep every k-th step). */
const MAX_FRAMES = 48;
async function runJob(
  cache: GraphCache,
  job: { id: string; spec: SampleSpec; estimate: JobEstimate | null },
  signal: AbortSignal,
  post: (m: FromWorker) => void,
): Promise<void> {
  const { id, spec } = job;
  const t0 = performance.now();
  const pipe = await cache.pipelineFor(spec, job.estimate);
  const scheduler = schedulerFor({ name: spec.scheduler, karras: spec.karras }, pipe.schedulerConfig);
  const grid = (x: { data: Float32Array; shape: readonly number[] }): Raster =>
    makeGrid(x, { nrow: spec.nrow, padValue: 0.15 });
  const every = Math.max(1, Math.ceil(spec.steps / MAX_FRAMES));
  const frames: Raster[] = [];
  post({ kind: "start", id });
  const images = await pipelineGenerate(pipe, scheduler, {
    ...(spec.prompts
      ? {
          prompts: spec.prompts,
          negativePrompts: spec.negativePrompt === null ? null : [spec.negativePrompt],
          // the live x_t and x̂0 as images: two VAE decodes per step, the price of seeing pictures, not latents
          decodePreviews: true,
        }
      : { labels: spec.labels ?? spec.count, numClasses: spec.numClasses }),
    steps: spec.steps,
    guidance: spec.guidance,
    guidanceRescale: spec.guidanceRescale,
    eta: spec.eta,
    seed: spec.seed,
    size: spec.size,
    ...(spec.control
      ? {
          control: {
            image: new HostTensor(spec.control.image, [1, 3, spec.size, spec.size]),
            scale: spec.control.scale,
            guessMode: spec.control.guessMode,
          },
        }
      : {}),
    signal,
    onStep: ({ i, t, x, x0 }) => {
      const gx = grid(toUnitRange(x));
      const gx0 = grid(toUnitRange(x0));
      if (i % every === 0) frames.push(gx);
      post({
        kind: "step",
        id,
        i,
        steps: spec.steps,
        t,
        x: encodePng(gx, { level: 1 }),
        x0: encodePng(gx0, { level: 1 }),
      });
    },
  });
  const final = grid(images);
  const text = { parameters: spec.parameters, Software: "diffuse studio" };
  frames.push(final);
  const delays = frames.map((_, k) => (k === frames.length - 1 ? 2000 : 80));
  post({
    kind: "done",
    id,
    png: encodePng(final, { text }),
    apng: encodeApng(frames, { delayMs: delays, text }),
    ms: performance.now() - t0,
  });
}

/**
 * The worker's job: serves sampling jobs from the named channel until told to stop (or until the
 * runInWorker signal aborts). Jobs run one after another; a cancel aborts the named job.
 */
export async function serveSampling(
  args: { channel: string; cacheBytes: number },
  ctx: WorkerContext<FromWorker>,
): Promise<void> {
  // the cache evicts graphs to stay within its budget: each session's arena goes with it
  setDefaultArena("own");
  const channel = new BroadcastChannel(args.channel);
  const cache = new GraphCache(args.cacheBytes);
  const queue: { id: string; spec: SampleSpec; estimate: JobEstimate | null }[] = [];
  const cancels = new Map<string, AbortController>();
  let wake: (() => void) | null = null;
  let stopping = false;
  const stop = () => {
    stopping = true;
    for (const ac of cancels.values()) ac.abort();
    wake?.();
  };
  ctx.signal.addEventListener("abort", stop, { once: true });
  channel.onmessage = (ev: unknown) => {
    const m = (ev as { data: ToWorker }).data;
    if (m.kind === "job") {
      cancels.set(m.id, new AbortController());
      queue.push({ id: m.id, spec: m.spec, estimate: m.estimate });
      wake?.();
    } else if (m.kind === "cancel") cancels.get(m.id)?.abort();
    else stop();
  };
  ctx.post({ kind: "ready" });
  try {
    while (!stopping) {
      const job = queue.shift();
      if (!job) {
        await new Promise<void>((r) => {
          wake = r;
        });
        wake = null;
        continue;
      }
      const ac = cancels.get(job.id)!;
      try {
        if (ac.signal.aborted) throw new CancelledError();
        await runJob(cache, job, ac.signal, (m) => ctx.post(m));
      } catch (e) {
        const cancelled = e instanceof CancelledError;
        const message = cancelled ? "generation was cancelled" : (e as Error).message;
        ctx.post({ kind: "failed", id: job.id, message, cancelled });
      } finally {
        cancels.delete(job.id);
      }
    }
  } finally {
    cache.clear();
    channel.close();
  }
}
