/**
 * The studio's HTTP server (node:http): the page, a JSON API, and Server-Sent Events for live
 * denoising and live training runs. Sampling runs in a worker thread behind a bounded queue
 * (jobs.ts); requests are validated (validate.ts) and held to a memory and time budget per job
 * (job-budget.ts), which also bounds the worker's cache of compiled graphs; files are only ever read
 * from the page folder and the served runs, by names checked against fixed patterns.
 *
 * Routes:
 *   GET    /                                   the page
 *   GET    /static/NAME                        page assets
 *   GET    /api/info                           models (and those left out, with why), samplers, limits, queue, runs
 *   POST   /api/generate                       JSON parameters → event stream: queued, start, step…, done | error | cancelled
 *   DELETE /api/jobs/ID                        cancel a job (closing its stream does too)
 *   GET    /api/gallery                        this session's generations
 *   GET    /api/gallery/ID/image.png           final grid (parameters in its text chunk); ?download=1 to save
 *   GET    /api/gallery/ID/trajectory.png      the denoising trajectory as an animated PNG
 *   GET    /api/runs                           training runs
 *   GET    /api/runs/ID/metrics?from=OFFSET    metrics rows from a byte offset
 *   GET    /api/runs/ID/events                 event stream: reset, metrics, samples as the run trains
 *   GET    /api/runs/ID/samples/step-N.png     a sample grid
 */
import { readFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { SCHEDULER_NAMES } from "../pipelines/scheduler-names.ts";
import { Catalog, type CatalogOptions } from "./catalog.ts";
import { describe, Gallery } from "./gallery.ts";
import { handleGenerate } from "./generate-route.ts";
import { EventStream, HttpError, pathSegments, sendBytes, sendError, sendJson } from "./http.ts";
import { defaultBudget, type JobBudget } from "./job-budget.ts";
import { SamplingQueue } from "./jobs.ts";
import { readMetrics, runSummary, samplePath, watchRun } from "./runs.ts";
import { pageFile } from "./static.ts";
import { LIMITS } from "./validate.ts";

export interface StudioOptions extends CatalogOptions {
  /** Address to bind (default 127.0.0.1). */
  host?: string;
  /** Port (default 7860; 0 picks a free one). */
  port?: number;
  /** Generations that may wait behind the running one (default 8). */
  queueCapacity?: number;
  /** Live run streams open at once (default 32). */
  maxWatchers?: number;
  /** How often run streams check for new metrics and grids (default 1000 ms). */
  watchIntervalMs?: number;
  /**
   * How long a client may take to send a whole request, headers and body (default 30 s; Node's own
   * default of 300 s lets a half-sent body hold a connection for minutes). Answered 408.
   */
  requestTimeoutMs?: number;
  /** Connections open at once; more are closed as they arrive (default 128). */
  maxConnections?: number;
  /**
   * The most memory (bytes) and time (seconds) one generation may need, estimated before it is queued
   * (larger ones are refused with 422); the memory is also what the worker may keep in compiled graphs.
   * Default: a quarter of the machine's memory, 15 minutes.
   */
  budget?: Partial<JobBudget>;
}

export interface Studio {
  readonly url: string;
  readonly server: Server;
  readonly queue: SamplingQueue;
  readonly catalog: Catalog;
  readonly gallery: Gallery;
  readonly budget: JobBudget;
  close(): Promise<void>;
}

export const isLoopback = (host: string): boolean =>
  host === "localhost" || host === "::1" || host === "[::1]" || /^127\.\d+\.\d+\.\d+$/.test(host);

/** The host name of a Host header ("127.0.0.1:7860" → "127.0.0.1", "[::1]:80" → "[::1]"). */
const hostName = (h: string) => (h.startsWith("[") ? h.slice(0, h.indexOf("]") + 1) : h.replace(/:\d+$/, ""));

export async function startStudio(opts: StudioOptions = {}): Promise<Studio> {
  const host = opts.host ?? "127.0.0.1";
  const catalog = new Catalog(opts);
  const budget: JobBudget = { ...defaultBudget(), ...opts.budget };
  const queue = new SamplingQueue({ capacity: opts.queueCapacity ?? 8, cacheBytes: budget.memoryBytes });
  const gallery = new Gallery();
  const maxWatchers = opts.maxWatchers ?? 32;
  const streams = new Set<EventStream>();
  let watchers = 0;

  const runOr404 = (id: string) => {
    const run = catalog.run(id);
    if (!run)
      throw new HttpError(
        404,
        `no training run "${id}"; served runs: ${
          catalog
            .runs()
            .map((r) => r.id)
            .join(", ") || "none (start the studio with --runs DIR)"
        }`,
      );
    return run;
  };

  const route = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    // a page on another site could reach a loopback server through DNS rebinding: loopback binds
    // answer only requests addressed to a loopback name
    if (isLoopback(host)) {
      const to = req.headers.host;
      if (to === undefined || to === "") {
        throw new HttpError(
          400,
          "requests to this studio need a Host header naming 127.0.0.1 or localhost (HTTP/1.1 clients and browsers send one)",
        );
      }
      if (!isLoopback(hostName(to))) {
        throw new HttpError(
          403,
          `requests to this studio must be addressed to 127.0.0.1 or localhost, not "${to}"`,
        );
      }
    }
    // the raw path, not new URL(…).pathname: URL parsing would resolve "..", hiding traversal attempts
    const raw = req.url ?? "/";
    if (!raw.startsWith("/")) throw new HttpError(400, `request paths start with "/", got "${raw}"`);
    const url = {
      pathname: raw.replace(/\?.*$/s, ""),
      searchParams: new URLSearchParams(raw.replace(/^[^?]*\??/s, "")),
    };
    const seg = pathSegments(url.pathname);
    const method = req.method ?? "GET";
    const want = (m: string) => {
      if (method !== m) throw new HttpError(405, `${url.pathname} takes ${m}, not ${method}`, { allow: m });
    };
    const [a, b, c, d, e] = seg;

    if (seg.length === 0 || (seg.length === 1 && a === "index.html")) {
      want("GET");
      return sendBytes(res, pageFile("index.html"), "text/html; charset=utf-8");
    }
    if (a === "static" && b !== undefined && seg.length === 2) {
      want("GET");
      const types: Record<string, string> = {
        js: "text/javascript",
        css: "text/css",
        svg: "image/svg+xml",
        html: "text/html",
      };
      const ext = b.slice(b.lastIndexOf(".") + 1);
      return sendBytes(res, pageFile(b), `${types[ext] ?? "application/octet-stream"}; charset=utf-8`);
    }
    if (a !== "api") throw new HttpError(404, `no such page: ${url.pathname}`);

    if (b === "info" && seg.length === 2) {
      want("GET");
      const models = await catalog.models();
      return sendJson(res, 200, {
        models,
        problems: catalog.problems().map(({ id, error }) => ({ id, error })),
        schedulers: SCHEDULER_NAMES,
        limits: LIMITS,
        budget,
        queue: queue.stats,
        runs: catalog.runs().map(runSummary),
      });
    }
    if (b === "generate" && seg.length === 2) {
      want("POST");
      return handleGenerate(req, res, { catalog, queue, gallery, streams, budget });
    }
    if (b === "jobs" && c !== undefined && seg.length === 3) {
      want("DELETE");
      queue.cancel(c);
      res.writeHead(204).end();
      return;
    }
    if (b === "gallery") {
      if (seg.length === 2) {
        want("GET");
        return sendJson(res, 200, { entries: gallery.list() });
      }
      const entry = c === undefined ? undefined : gallery.get(c);
      if (!entry) throw new HttpError(404, `no generation "${c}" in this session's gallery`);
      want("GET");
      if (seg.length === 3) return sendJson(res, 200, describe(entry));
      const download = url.searchParams.get("download") === "1";
      const name = `diffuse-${entry.params.model}-seed${entry.params.seed}`;
      if (seg.length === 4 && (d === "image.png" || d === "trajectory.png")) {
        const file = d === "image.png" ? `${name}.png` : `${name}-trajectory.png`;
        return sendBytes(res, d === "image.png" ? entry.png : entry.apng, "image/png", {
          "content-disposition": `${download ? "attachment" : "inline"}; filename="${file}"`,
        });
      }
      throw new HttpError(404, `no such gallery file: ${url.pathname}`);
    }
    if (b === "runs") {
      want("GET");
      if (seg.length === 2) return sendJson(res, 200, { runs: catalog.runs().map(runSummary) });
      const run = runOr404(c!);
      if (seg.length === 3) return sendJson(res, 200, runSummary(run));
      if (d === "metrics" && seg.length === 4) {
        const from = Number(url.searchParams.get("from") ?? "0");
        if (!Number.isSafeInteger(from) || from < 0) {
          throw new HttpError(
            400,
            `from must be a byte offset (a whole number ≥ 0), got "${url.searchParams.get("from")}"`,
          );
        }
        return sendJson(res, 200, readMetrics(run.dir, from));
      }
      if (d === "samples" && e !== undefined && seg.length === 5) {
        return sendBytes(res, readFileSync(samplePath(run, e)), "image/png");
      }
      if (d === "events" && seg.length === 4) {
        if (watchers >= maxWatchers) {
          throw new HttpError(429, `too many live run views are open (${maxWatchers}); close one and retry`, {
            "retry-after": "5",
          });
        }
        watchers++;
        const stream = new EventStream(res);
        streams.add(stream);
        res.on("close", () => {
          watchers--;
          streams.delete(stream);
        });
        watchRun(run, stream, opts.watchIntervalMs ?? 1000);
        return;
      }
      throw new HttpError(404, `no such run route: ${url.pathname}`);
    }
    throw new HttpError(404, `no such API route: ${method} ${url.pathname}`);
  };

  const requestTimeout = opts.requestTimeoutMs ?? 30_000;
  const server = createServer(
    {
      requestTimeout,
      headersTimeout: Math.min(10_000, requestTimeout),
      // how often the timeouts are checked (Node's default, 30 s, would double a 30 s limit)
      connectionsCheckingInterval: Math.min(1000, requestTimeout),
    },
    (req, res) => {
      route(req, res).catch((e) => sendError(res, e));
    },
  );
  server.maxConnections = opts.maxConnections ?? 128;
  await new Promise<void>((resolve, reject) => {
    server.once("error", (e: NodeJS.ErrnoException) => {
      const port = opts.port ?? 7860;
      if (e.code === "EADDRINUSE")
        reject(new Error(`port ${port} on ${host} is in use; pass --port N (0 picks a free port)`));
      else if (e.code === "EADDRNOTAVAIL")
        reject(new Error(`cannot bind ${host}: no such address on this machine`));
      else reject(e);
    });
    server.listen(opts.port ?? 7860, host, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  const shown = addr.family === "IPv6" ? `[${addr.address}]` : addr.address;
  let closing: Promise<void> | null = null;
  return {
    url: `http://${shown}:${addr.port}/`,
    server,
    queue,
    catalog,
    gallery,
    budget,
    close() {
      closing ??= (async () => {
        const done = new Promise<void>((r) => server.close(() => r()));
        await queue.close();
        for (const s of streams) s.end();
        server.closeAllConnections();
        await done;
      })();
      return closing;
    },
  };
}
