// The studio's server under requests a browser would not send: no Host header, paths that name a
// folder where a file is expected, bodies that never finish, more connections than it takes.
import assert from "node:assert/strict";
import { mkdirSync, rmSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { type Studio, startStudio } from "../../src/web/server.ts";
import { type Fixture, makeFixture } from "./fixture.ts";

let fx: Fixture;
let studio: Studio;

before(async () => {
  fx = await makeFixture();
  studio = await startStudio({ models: [fx.modelDir], runs: [fx.runsDir], port: 0 });
});

after(async () => {
  await studio.close();
  rmSync(fx.root, { recursive: true, force: true });
});

/** Sends `text` on a raw socket and resolves with everything the server answers until it closes. */
function raw(url: string, text: string): Promise<string> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(u.port), u.hostname, () => socket.write(text));
    let got = "";
    socket.on("data", (b: Buffer) => {
      got += b.toString();
    });
    socket.on("end", () => resolve(got));
    socket.on("error", reject);
  });
}

test("a request without a Host header is told it needs one", async () => {
  const answer = await raw(studio.url, "GET /api/info HTTP/1.0\r\n\r\n");
  assert.match(answer, /^HTTP\/1\.1 400 /);
  assert.match(answer, /requests to this studio need a Host header naming 127\.0\.0\.1 or localhost/);
  assert.doesNotMatch(answer, /undefined/);
});

test("a folder named like a sample grid is no grid: 404, not a 500", async () => {
  mkdirSync(join(fx.runDir, "samples", "step-000888.png"));
  const r = await fetch(`${studio.url}api/runs/toy-run/samples/step-000888.png`);
  assert.equal(r.status, 404);
  assert.match(((await r.json()) as { error: string }).error, /run "toy-run" has no sample step-000888\.png/);
  // a metrics.jsonl that is a folder reads as no metrics yet
  const odd = join(fx.runsDir, "odd-run");
  mkdirSync(join(odd, "metrics.jsonl"), { recursive: true });
  const m = await fetch(`${studio.url}api/runs/odd-run/metrics`);
  assert.equal(m.status, 200);
  assert.deepEqual(((await m.json()) as { rows: unknown[] }).rows, []);
});

/** Resolves with what the server sent when it closes the socket, or rejects after `ms`. */
function closed(socket: Socket, ms: number): Promise<string> {
  let got = "";
  socket.on("data", (b: Buffer) => {
    got += b.toString();
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`still open after ${ms} ms`)), ms);
    socket.on("close", () => {
      clearTimeout(timer);
      resolve(got);
    });
    socket.on("error", () => {});
  });
}

const open = (url: string): Promise<Socket> =>
  new Promise((resolve, reject) => {
    const u = new URL(url);
    const s = connect(Number(u.port), u.hostname, () => resolve(s));
    s.on("error", reject);
  });

test("a request body that never finishes is cut off (30 s by default), with a 408", async () => {
  assert.equal(studio.server.requestTimeout, 30_000);
  assert.ok(studio.server.headersTimeout <= 10_000);
  const quick = await startStudio({ models: [fx.modelDir], port: 0, requestTimeoutMs: 1000 });
  try {
    const socket = await open(quick.url);
    const t0 = performance.now();
    const answer = closed(socket, 5000);
    socket.write(
      'POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"mo',
    );
    assert.match(await answer, /^HTTP\/1\.1 408 /);
    assert.ok(performance.now() - t0 < 4000);
  } finally {
    await quick.close();
  }
});

test("connections beyond the cap are closed as they arrive; the studio serves again once they go", async () => {
  assert.equal(studio.server.maxConnections, 128);
  const capped = await startStudio({ models: [fx.modelDir], port: 0, maxConnections: 2 });
  try {
    const held = [await open(capped.url), await open(capped.url)];
    const extra = await open(capped.url);
    assert.equal(await closed(extra, 3000), "");
    for (const s of held) s.destroy();
    await new Promise((r) => setTimeout(r, 100));
    assert.equal((await fetch(`${capped.url}api/info`)).status, 200);
  } finally {
    await capped.close();
  }
});
