/** HTTP helpers for the studio tests: JSON requests, raw paths (no URL normalization), event streams. */
import { request } from "node:http";

export interface StreamEvent {
  event: string;
  data: Record<string, unknown>;
}

/** Parses a complete Server-Sent Events body. */
export function parseEvents(text: string): StreamEvent[] {
  const out: StreamEvent[] = [];
  for (const block of text.split("\n\n")) {
    let event = "message";
    const data: string[] = [];
    for (const line of block.split("\n")) {
      if (line.startsWith("event:")) event = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
    }
    if (data.length) out.push({ event, data: JSON.parse(data.join("\n")) as Record<string, unknown> });
  }
  return out;
}

export async function postJson(url: string, body: unknown, init: RequestInit = {}): Promise<Response> {
  return fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: typeof body === "string" ? body : JSON.stringify(body),
    ...init,
  });
}

/** Posts a generation and reads its whole event stream (or the JSON error). */
export async function generate(
  base: string,
  body: unknown,
): Promise<{ status: number; events: StreamEvent[]; error?: string }> {
  const res = await postJson(`${base}api/generate`, body);
  if (res.headers.get("content-type")?.startsWith("text/event-stream")) {
    return { status: res.status, events: parseEvents(await res.text()) };
  }
  const json = (await res.json()) as { error: string };
  return { status: res.status, events: [], error: json.error };
}

/** Reads events from a streaming response as they arrive. */
export async function* streamEvents(res: Response): AsyncGenerator<StreamEvent> {
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let cut = buf.indexOf("\n\n");
    while (cut >= 0) {
      const [ev] = parseEvents(buf.slice(0, cut + 2));
      buf = buf.slice(cut + 2);
      if (ev) yield ev;
      cut = buf.indexOf("\n\n");
    }
  }
}

/** A GET with the path sent exactly as given (fetch would resolve "..") and optional headers. */
export function rawGet(
  base: string,
  path: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: string }> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, path, method: "GET", headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () =>
        resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }),
      );
    });
    req.on("error", reject);
    req.end();
  });
}
