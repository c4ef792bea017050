/**
 * Small HTTP helpers for the studio server (node:http, no framework): JSON answers, errors that
 * carry a status and a message meant for the person reading it, bounded JSON bodies, and
 * Server-Sent Events (the WHATWG HTML "server-sent events" wire format: `event:` and `data:`
 * lines, a blank line between events).
 */
import type { IncomingMessage, ServerResponse } from "node:http";

/** An error answered with its status and message (as `{ "error": message }`). */
export class HttpError extends Error {
  override name = "HttpError";
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(message);
  }
}

const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "cache-control": "no-store",
};

export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Readonly<Record<string, string>> = {},
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    ...SECURITY_HEADERS,
    "content-type": "application/json; charset=utf-8",
    "content-length": Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

export function sendError(res: ServerResponse, e: unknown): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  if (e instanceof HttpError) sendJson(res, e.status, { error: e.message }, e.headers);
  else sendJson(res, 500, { error: `internal error: ${(e as Error).message ?? String(e)}` });
}

export function sendBytes(
  res: ServerResponse,
  bytes: Uint8Array,
  contentType: string,
  headers: Readonly<Record<string, string>> = {},
): void {
  res.writeHead(200, {
    ...SECURITY_HEADERS,
    "content-type": contentType,
    "content-length": bytes.byteLength,
    ...headers,
  });
  res.end(bytes);
}

/** Reads a JSON request body of at most `limit` bytes; 413 beyond it, 415 unless it says JSON, 400 if unparsable. */
export async function readJsonBody(req: IncomingMessage, limit = 16 * 1024): Promise<unknown> {
  const type = req.headers["content-type"] ?? "";
  if (!/^application\/json\b/i.test(type)) {
    // also keeps cross-site form posts out: a JSON content type needs a CORS preflight we never grant
    throw new HttpError(415, `send the parameters as JSON (content-type: application/json), not "${type}"`);
  }
  const declared = Number(req.headers["content-length"] ?? "0");
  if (declared > limit)
    throw new HttpError(413, `request body too large: ${declared} bytes (limit ${limit})`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw new HttpError(413, `request body too large: over ${limit} bytes`);
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString("utf8");
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw new HttpError(400, `the request body is not valid JSON: ${(e as Error).message}`);
  }
}

/** Splits a request path into decoded segments; malformed escapes, NUL bytes and dot segments are a 400. */
export function pathSegments(pathname: string): string[] {
  const raw = pathname.split("/").filter((s) => s !== "");
  return raw.map((s) => {
    let d: string;
    try {
      d = decodeURIComponent(s);
    } catch {
      throw new HttpError(400, `malformed path segment "${s}"`);
    }
    if (d === "." || d === ".." || /[/\\\0]/.test(d)) {
      throw new HttpError(400, `path segment "${d}" is not allowed: paths stay inside the served folders`);
    }
    return d;
  });
}

/**
 * A Server-Sent Events stream. `send` drops events marked `droppable` while the socket is backed up
 * (live previews: a slow client skips frames instead of the server buffering them without bound).
 */
export class EventStream {
  private closed = false;
  private readonly heartbeat: NodeJS.Timeout;

  constructor(
    private readonly res: ServerResponse,
    private readonly maxBuffered = 4 * 1024 * 1024,
  ) {
    res.writeHead(200, {
      ...SECURITY_HEADERS,
      "content-type": "text/event-stream; charset=utf-8",
      connection: "keep-alive",
    });
    res.flushHeaders();
    // a comment line every 15 s keeps proxies from timing the stream out
    this.heartbeat = setInterval(() => this.write(": keep-alive\n\n"), 15_000);
    this.heartbeat.unref();
    res.on("close", () => this.stop());
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Sends one event; returns false when it was dropped (closed stream, or a droppable event on a full buffer). */
  send(event: string, data: unknown, opts: { droppable?: boolean } = {}): boolean {
    if (this.closed) return false;
    if (opts.droppable && this.res.writableLength > this.maxBuffered) return false;
    this.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    return true;
  }

  end(): void {
    if (this.closed) return;
    this.stop();
    this.res.end();
  }

  private write(s: string): void {
    if (!this.closed) this.res.write(s);
  }

  private stop(): void {
    this.closed = true;
    clearInterval(this.heartbeat);
  }
}
