import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { after, before, test } from "node:test";
import { type Studio, startStudio } from "../../src/web/server.ts";
import { generate, postJson, type StreamEvent, streamEvents } from "./client.ts";
import { type Fixture, makeFixture } from "./fixture.ts";

let fx: Fixture;
let studio: Studio;
let base: string;

before(async () => {
  fx = await makeFixture();
  studio = await startStudio({ models: [fx.modelDir], port: 0, queueCapacity: 1 });
  base = studio.url;
});

after(async () => {
  await studio.close();
  rmSync(fx.root, { recursive: true, force: true });
});

/** A job that takes far longer than the test (it is always cancelled): 200 guided steps on a batch of 128. */
const slow = (seed: number) => ({ model: "tiny", steps: 200, count: 64, size: 32, guidance: 3, seed });

/** Opens a generation stream and reads it until an event satisfies `until`. */
async function open(body: unknown, until: (e: StreamEvent) => boolean) {
  const controller = new AbortController();
  const res = await postJson(`${base}api/generate`, body, { signal: controller.signal });
  assert.equal(res.status, 200);
  const events = streamEvents(res);
  const seen: StreamEvent[] = [];
  const readUntil = async (pred: (e: StreamEvent) => boolean) => {
    for (;;) {
      const { value, done } = await events.next();
      if (done) throw new Error(`stream ended before the awaited event; saw ${seen.map((e) => e.event)}`);
      seen.push(value);
      if (pred(value)) return value;
    }
  };
  await readUntil(until);
  return { controller, seen, readUntil };
}

async function waitFor(cond: () => boolean, ms: number, what: string) {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test("a full queue answers 429; a client that disconnects cancels its job; DELETE cancels a job", async () => {
  const a = await open(slow(1), (e) => e.event === "step");
  const b = await open(slow(2), (e) => e.event === "queued");
  assert.equal(b.seen[0]!.data["position"], 1);
  const bId = String(b.seen[0]!.data["id"]);

  const c = await postJson(`${base}api/generate`, slow(3));
  assert.equal(c.status, 429);
  assert.equal(c.headers.get("retry-after"), "5");
  assert.match(
    ((await c.json()) as { error: string }).error,
    /the studio is busy: 1 generations are already waiting \(the queue holds 1\); try again in a moment/,
  );

  // A's client goes away: its job stops at the next network evaluation and B starts
  a.controller.abort();
  await b.readUntil((e) => e.event === "start");
  assert.equal(studio.gallery.list().length, 0, "the cancelled job must not finish");

  const del = await fetch(`${base}api/jobs/${bId}`, { method: "DELETE" });
  assert.equal(del.status, 204);
  const end = await b.readUntil((e) => e.event === "cancelled" || e.event === "done" || e.event === "error");
  assert.equal(end.event, "cancelled");
  assert.match(String(end.data["message"]), /cancelled/);
  await waitFor(() => !studio.queue.stats.running, 10_000, "the queue to go idle");

  // the worker is still good for work
  const ok = await generate(base, { model: "tiny", steps: 3, count: 2 });
  assert.equal(ok.events.at(-1)?.event, "done");
});

test("a queued job whose client disconnects leaves the queue without running", async () => {
  const a = await open(slow(4), (e) => e.event === "step");
  const b = await open(slow(5), (e) => e.event === "queued");
  b.controller.abort();
  await waitFor(() => studio.queue.stats.waiting === 0, 5000, "the queued job to leave");
  assert.ok(studio.queue.stats.running, "the running job is not affected");
  a.controller.abort();
  await waitFor(() => !studio.queue.stats.running, 15_000, "the running job to stop");
});
