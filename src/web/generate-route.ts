/**
 * POST /api/generate: validates the parameters, queues the job and answers with an event stream
 * that follows it: `queued` (id, place in line), `start`, one `step` per denoising step (x_t and x̂0
 * as PNG data URLs; dropped for a client that cannot keep up), then `done` (the gallery entry),
 * `error` or `cancelled`. A client that disconnects cancels its job. A full queue answers 429
 * before any stream starts; bad parameters answer 400; a job over the studio's memory or time budget
 * (job-budget.ts) answers 422.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Catalog } from "./catalog.ts";
import { describe, type Gallery } from "./gallery.ts";
import { EventStream, HttpError, readJsonBody } from "./http.ts";
import { admitJob, type JobBudget } from "./job-budget.ts";
import type { SamplingQueue } from "./jobs.ts";
import { validateGenerate } from "./validate.ts";

const dataUrl = (png: Uint8Array) => `data:image/png;base64,${Buffer.from(png).toString("base64")}`;

export async function handleGenerate(
  req: IncomingMessage,
  res: ServerResponse,
  ctx: {
    catalog: Catalog;
    queue: SamplingQueue;
    gallery: Gallery;
    streams: Set<EventStream>;
    budget: JobBudget;
  },
): Promise<void> {
  const { params, spec, model } = await validateGenerate(await readJsonBody(req), ctx.catalog);
  const cost = await ctx.catalog.cost(model);
  // a model whose files changed since it was listed has no cost yet: the worker's cache still bounds it
  const estimate = cost
    ? admitJob(
        cost,
        {
          count: spec.count,
          size: spec.size,
          steps: spec.steps,
          guided:
            model.numClasses !== null || model.prompts ? spec.guidance !== 0 && spec.guidance !== 1 : false,
        },
        ctx.budget,
        ctx.queue.throughput.macsPerSecond,
        model.id,
      )
    : null;
  if (ctx.queue.full) {
    const { waiting, capacity } = ctx.queue.stats;
    throw new HttpError(
      429,
      `the studio is busy: ${waiting} generations are already waiting (the queue holds ${capacity}); try again in a moment`,
      { "retry-after": "5" },
    );
  }
  // nothing asynchronous happens between the check above and submit(): the queue cannot fill in between
  const stream = new EventStream(res);
  ctx.streams.add(stream);
  let finished = false;
  const id = ctx.queue.submit(spec, estimate, (ev) => {
    if (ev.type === "queued") stream.send("queued", { id: ev.id, position: ev.position, params });
    else if (ev.type === "start") stream.send("start", { params });
    else if (ev.type === "step") {
      const data = { i: ev.i, steps: ev.steps, t: ev.t, x: dataUrl(ev.x), x0: dataUrl(ev.x0) };
      stream.send("step", data, { droppable: true });
    } else {
      finished = true;
      if (ev.type === "done") stream.send("done", describe(ctx.gallery.add(params, ev.png, ev.apng, ev.ms)));
      else stream.send(ev.cancelled ? "cancelled" : "error", { message: ev.message });
      stream.end();
    }
  });
  res.on("close", () => {
    ctx.streams.delete(stream);
    if (!finished) ctx.queue.cancel(id);
  });
}
