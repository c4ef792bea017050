import assert from "node:assert/strict";
import { appendFileSync, cpSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { readMetrics } from "../../src/web/runs.ts";
import { type Studio, startStudio } from "../../src/web/server.ts";
import { generate, type StreamEvent, streamEvents } from "./client.ts";
import { type Fixture, makeFixture, metricLines, writeSample } from "./fixture.ts";

let fx: Fixture;
let studio: Studio;
let base: string;

before(async () => {
  fx = await makeFixture();
  studio = await startStudio({ models: [fx.modelDir], runs: [fx.runsDir], port: 0, watchIntervalMs: 50 });
  base = studio.url;
});

after(async () => {
  await studio.close();
  rmSync(fx.root, { recursive: true, force: true });
});

test("metrics are read from a byte offset; a line still being written waits; a trimmed file resets", () => {
  const first = readMetrics(fx.runDir, 0);
  assert.deepEqual(
    first.rows.map((r) => r.step),
    [10, 20, 30],
  );
  assert.equal(first.reset, false);
  appendFileSync(join(fx.runDir, "metrics.jsonl"), `${metricLines(4, 4)}{"step":50,"lo`);
  const next = readMetrics(fx.runDir, first.offset);
  assert.deepEqual(
    next.rows.map((r) => r.step),
    [40],
  );
  appendFileSync(join(fx.runDir, "metrics.jsonl"), `ss":0.2}\n`);
  assert.deepEqual(
    readMetrics(fx.runDir, next.offset).rows.map((r) => [r.step, r.loss]),
    [[50, 0.2]],
  );
  // a resumed run trims metrics.jsonl back to its checkpoint
  writeFileSync(join(fx.runDir, "metrics.jsonl"), metricLines(1, 2));
  const trimmed = readMetrics(fx.runDir, next.offset + 20);
  assert.equal(trimmed.reset, true);
  assert.deepEqual(
    trimmed.rows.map((r) => r.step),
    [10, 20],
  );
});

test("a run's event stream sends what exists, then new metrics and grids as the run writes them", async () => {
  writeFileSync(join(fx.runDir, "metrics.jsonl"), metricLines(1, 3));
  const controller = new AbortController();
  const res = await fetch(`${base}api/runs/toy-run/events`, { signal: controller.signal });
  assert.match(res.headers.get("content-type")!, /^text\/event-stream/);
  const events = streamEvents(res);
  const next = async (): Promise<StreamEvent> => {
    const r = await events.next();
    assert.ok(!r.done, "the stream ended");
    return r.value;
  };
  const reset = await next();
  assert.equal(reset.event, "reset");
  assert.equal((reset.data["run"] as { steps: number }).steps, 100);
  const m = await next();
  assert.equal(m.event, "metrics");
  assert.equal((m.data["rows"] as unknown[]).length, 3);
  const s = await next();
  assert.deepEqual(s.data["names"], ["step-000010.png"]);

  appendFileSync(join(fx.runDir, "metrics.jsonl"), metricLines(4, 5));
  const more = await next();
  assert.equal(more.event, "metrics");
  assert.deepEqual(
    (more.data["rows"] as { step: number }[]).map((r) => r.step),
    [40, 50],
  );
  writeSample(fx.runDir, 50);
  const grids = await next();
  assert.equal(grids.event, "samples");
  assert.deepEqual(grids.data["names"], ["step-000010.png", "step-000050.png"]);
  const png = await fetch(`${base}api/runs/toy-run/samples/step-000050.png`);
  assert.equal(png.headers.get("content-type"), "image/png");
  controller.abort();
});

test("runs started after the server appear, and a run's exported model can be sampled", async () => {
  const second = join(fx.runsDir, "second");
  mkdirSync(second);
  writeFileSync(join(second, "metrics.jsonl"), metricLines(1, 1));
  cpSync(fx.modelDir, join(second, "model"), { recursive: true });
  const { runs } = (await (await fetch(`${base}api/runs`)).json()) as { runs: { id: string }[] };
  assert.deepEqual(
    runs.map((r) => r.id),
    ["second", "toy-run"],
  );
  const info = (await (await fetch(`${base}api/info`)).json()) as {
    models: { id: string; source: string }[];
  };
  assert.deepEqual(
    info.models.map((m) => [m.id, m.source]),
    [
      ["tiny", "folder"],
      ["run-second", "run"],
    ],
  );
  const r = await generate(base, { model: "run-second", steps: 2, count: 2 });
  assert.equal(r.events.at(-1)?.event, "done", r.error);
});
