/**
 * Fault harness (c): the studio under a bounded loopback load of mixed shapes. A few clients post
 * generations back to back — label and text-to-image models, counts, sizes, steps and samplers drawn
 * at random — and some of them walk away mid-stream (a cancel), send bad parameters (400) or ask for
 * more than the budget (422), while another polls /api/info. Every request must be answered: a
 * finished stream (done, or cancelled for the ones that walked away) or a 4xx/429 with a message; no
 * 5xx, no stream that ends without its last event. The process's RSS is sampled throughout and must
 * stay within 1.5× its idle value plus one job (the memory budget).
 */
import { rmSync } from "node:fs";
import { dirname } from "node:path";
import { Rng } from "../src/tensor/rng.ts";
import { type Studio, startStudio } from "../src/web/server.ts";
import { makeTinySd, TINY_SD_CAPTIONS } from "../test/support/tiny-sd.ts";
import { postJson, streamEvents } from "../test/web/client.ts";
import { makeFixture } from "../test/web/fixture.ts";
import { choose, pick } from "./faults-fuzz-gen.ts";

export interface LoadOptions {
  seconds: number;
  /** Clients posting generations at once (default 3). */
  clients?: number;
  /** The studio's memory budget per job (default 512 MB). */
  budgetBytes?: number;
  seed?: number;
}

export interface LoadReport {
  requests: number;
  done: number;
  /** Walked away from mid-stream: the stream ended (cancelled) and the queue moved on. */
  cancelled: number;
  busy429: number;
  bad400: number;
  overBudget422: number;
  /** What must be zero: 5xx answers, streams without a final event, failed jobs, unanswered requests. */
  failures: string[];
  infoPolls: number;
  maxInfoMs: number;
  idleMb: number;
  maxMb: number;
  finalMb: number;
  /** 1.5 × idle + one job (the budget). */
  boundMb: number;
  seconds: number;
}

const MB = 2 ** 20;

export async function loadStudio(opts: LoadOptions): Promise<LoadReport> {
  const rng = new Rng(opts.seed ?? 7);
  const budget = opts.budgetBytes ?? 512 * MB;
  const fx = await makeFixture();
  const sd = await makeTinySd();
  const r: LoadReport = {
    requests: 0,
    done: 0,
    cancelled: 0,
    busy429: 0,
    bad400: 0,
    overBudget422: 0,
    failures: [],
    infoPolls: 0,
    maxInfoMs: 0,
    idleMb: 0,
    maxMb: 0,
    finalMb: 0,
    boundMb: 0,
    seconds: 0,
  };
  let studio: Studio | null = null;
  const fail = (what: string) => {
    if (r.failures.length < 20) r.failures.push(what);
  };
  try {
    studio = await startStudio({
      models: [fx.modelDir, sd],
      port: 0,
      queueCapacity: 4,
      budget: { memoryBytes: budget },
    });
    const base = studio.url;
    const text = (await studio.catalog.models()).find((m) => m.prompts)!.id;
    // the studio warmed (worker and ONNX Runtime started): its idle size
    await (await postJson(`${base}api/generate`, { model: "tiny", steps: 1, count: 1 })).text();
    const rss = () => process.memoryUsage.rss() / MB;
    r.idleMb = rss();
    r.boundMb = 1.5 * r.idleMb + budget / MB;
    const t0 = performance.now();
    const until = t0 + opts.seconds * 1000;
    const sampler = setInterval(() => {
      r.maxMb = Math.max(r.maxMb, rss());
    }, 250);

    const body = (): Record<string, unknown> => {
      const kind = pick(rng, 20);
      if (kind === 0) return { model: "tiny", steps: -3 }; // 400
      if (kind === 1) return { model: "tiny", count: 64, size: 128, steps: 2 }; // 422: over the budget
      const common = {
        steps: 1 + pick(rng, 6),
        seed: pick(rng, 1000),
        scheduler: choose(rng, ["ddim", "euler", "dpm++2m", "euler-a", "heun"]),
        count: 1 + pick(rng, 12),
      };
      return rng.nextUniform() < 0.3
        ? {
            model: text,
            prompt: choose(rng, TINY_SD_CAPTIONS),
            size: choose(rng, [8, 16, 24, 32]),
            ...common,
          }
        : {
            model: "tiny",
            size: choose(rng, [8, 12, 16, 24, 32, 40]),
            guidance: choose(rng, [1, 3]),
            ...common,
          };
    };

    const client = async () => {
      while (performance.now() < until) {
        const b = body();
        const walkAway = rng.nextUniform() < 0.15;
        const ac = new AbortController();
        r.requests++;
        let res: Response;
        try {
          res = await postJson(`${base}api/generate`, b, { signal: ac.signal });
        } catch (e) {
          fail(`no answer to ${JSON.stringify(b)}: ${(e as Error).message}`);
          continue;
        }
        if (res.status >= 500) fail(`${res.status} for ${JSON.stringify(b)}`);
        if (!res.headers.get("content-type")?.startsWith("text/event-stream")) {
          const { error } = (await res.json()) as { error?: string };
          if (!error || error.includes("\n")) fail(`${res.status} without a one-line message`);
          if (res.status === 429) r.busy429++;
          else if (res.status === 422) r.overBudget422++;
          else if (res.status === 400) r.bad400++;
          else fail(`unexpected ${res.status}: ${error}`);
          if (res.status === 429) await new Promise((w) => setTimeout(w, 100));
          continue;
        }
        let last = "";
        try {
          for await (const ev of streamEvents(res)) {
            last = ev.event;
            if (walkAway && ev.event === "step") {
              ac.abort();
              break;
            }
          }
        } catch (e) {
          if (!walkAway) fail(`stream broke: ${(e as Error).message}`);
        }
        if (walkAway && last !== "done" && last !== "error") r.cancelled++;
        else if (last === "done") r.done++;
        else fail(`stream ended with "${last}" for ${JSON.stringify(b)}`);
      }
    };
    const poller = async () => {
      while (performance.now() < until) {
        const s = performance.now();
        const res = await fetch(`${base}api/info`);
        await res.json();
        r.infoPolls++;
        r.maxInfoMs = Math.max(r.maxInfoMs, performance.now() - s);
        if (res.status !== 200) fail(`/api/info answered ${res.status}`);
        await new Promise((w) => setTimeout(w, 500));
      }
    };
    await Promise.all([...Array.from({ length: opts.clients ?? 3 }, client), poller()]);
    clearInterval(sampler);
    // the queue drains (walked-away jobs cancelled); then the memory a job left behind is what stays
    while (studio.queue.stats.running || studio.queue.stats.waiting)
      await new Promise((w) => setTimeout(w, 50));
    r.finalMb = rss();
    r.maxMb = Math.max(r.maxMb, r.finalMb);
    if (r.maxMb > r.boundMb)
      fail(`RSS reached ${Math.round(r.maxMb)} MB, over 1.5 × idle + one job = ${Math.round(r.boundMb)} MB`);
    r.seconds = (performance.now() - t0) / 1000;
  } finally {
    await studio?.close();
    rmSync(fx.root, { recursive: true, force: true });
    rmSync(dirname(sd), { recursive: true, force: true });
  }
  return r;
}
