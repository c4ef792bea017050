/**
 * A bounded load test on loopback: 20 concurrent generations against a queue of 8, then the
 * refused ones retried until done. Every request is answered (a finished stream or a 429 with a
 * message), none is lost, the server answers other requests meanwhile, and memory stays bounded.
 */
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { after, before, test } from "node:test";
import { type Studio, startStudio } from "../../src/web/server.ts";
import { generate } from "./client.ts";
import { type Fixture, makeFixture } from "./fixture.ts";

let fx: Fixture;
let studio: Studio;

before(async () => {
  fx = await makeFixture();
  studio = await startStudio({ models: [fx.modelDir], port: 0, queueCapacity: 8 });
  // warm the worker so the rounds measure the queue, not the first compile
  await generate(studio.url, { model: "tiny", steps: 2, count: 2 });
});

after(async () => {
  await studio.close();
  rmSync(fx.root, { recursive: true, force: true });
});

const REQUESTS = 20;

async function round(seed0: number): Promise<{ done: number; refused: number; maxInfoMs: number }> {
  const outcomes = Array.from({ length: REQUESTS }, (_, k) =>
    generate(studio.url, { model: "tiny", steps: 8, count: 4, seed: seed0 + k }),
  );
  // the page stays responsive: other requests are answered while jobs run
  let maxInfoMs = 0;
  const probe = (async () => {
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      assert.equal((await fetch(`${studio.url}api/info`)).status, 200);
      maxInfoMs = Math.max(maxInfoMs, performance.now() - t0);
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  const results = await Promise.all(outcomes);
  await probe;
  const pending: number[] = [];
  let done = 0;
  for (const [k, r] of results.entries()) {
    if (r.status === 429) {
      assert.match(r.error!, /the studio is busy/);
      pending.push(k);
    } else {
      assert.equal(r.status, 200, r.error);
      assert.equal(r.events.at(-1)?.event, "done", JSON.stringify(r.events.map((e) => e.event)));
      done++;
    }
  }
  const refused = pending.length;
  assert.equal(done + refused, REQUESTS);
  assert.ok(done >= 9, `the running job and 8 waiting ones are accepted, got ${done}`);
  // retry the refused ones, one at a time, until each is done (bounded)
  for (const k of pending) {
    for (let attempt = 0; ; attempt++) {
      assert.ok(attempt < 50, `request ${k} was refused 50 times`);
      const r = await generate(studio.url, { model: "tiny", steps: 8, count: 4, seed: seed0 + k });
      if (r.status === 200) {
        assert.equal(r.events.at(-1)?.event, "done");
        break;
      }
      await new Promise((res) => setTimeout(res, 100));
    }
  }
  return { done, refused, maxInfoMs };
}

test("20 concurrent requests: every one answered, none lost, memory bounded", {
  timeout: 90_000,
}, async (t) => {
  const before = process.memoryUsage().heapUsed;
  const first = await round(100);
  const afterFirst = process.memoryUsage().heapUsed;
  const second = await round(200);
  const afterSecond = process.memoryUsage().heapUsed;
  // how many were refused depends on the machine's speed (the queue-full answer itself is tested in queue.test.ts)
  t.diagnostic(`refused then retried: ${first.refused} and ${second.refused} of ${REQUESTS}`);
  // every generation landed in the gallery: 1 warm-up + 2 rounds of 20
  assert.equal(studio.gallery.list().length, 1 + 2 * REQUESTS);
  assert.deepEqual(studio.queue.stats, { waiting: 0, running: false, capacity: 8 });
  assert.ok(
    Math.max(first.maxInfoMs, second.maxInfoMs) < 2000,
    `info took ${first.maxInfoMs}/${second.maxInfoMs} ms`,
  );
  // a second round costs no more than the first (no per-request leak); generous for GC timing
  const mb = (b: number) => b / 2 ** 20;
  assert.ok(
    mb(afterSecond - afterFirst) < 32 && mb(afterSecond - before) < 64,
    `heap ${mb(before).toFixed(1)} → ${mb(afterFirst).toFixed(1)} → ${mb(afterSecond).toFixed(1)} MB`,
  );
});
