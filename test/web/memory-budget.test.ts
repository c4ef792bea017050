// The studio's memory is decided before work (issue 21 item 1): a job's memory and time are estimated
// from the model, count, size and steps and refused with 422 over the budget (a message that names the
// fields, the estimate, the limit and its flag, and what fits); the sampling worker keeps compiled
// graphs only up to the same budget, so after a sequence of job shapes the studio's RSS is back within
// 1.5× its idle value plus one job (the budget), where it once kept every shape's graphs.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { rmSync } from "node:fs";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { parseBytes } from "../../src/web/job-budget.ts";
import { estimateJob } from "../../src/web/job-cost.ts";
import { type Studio, startStudio } from "../../src/web/server.ts";
import { generate } from "./client.ts";
import { type Fixture, makeFixture } from "./fixture.ts";

const BUDGET = 400 * 2 ** 20;
let fx: Fixture;
let studio: Studio;

before(async () => {
  fx = await makeFixture();
  studio = await startStudio({
    models: [fx.modelDir],
    port: 0,
    budget: { memoryBytes: BUDGET, seconds: 600 },
  });
});

after(async () => {
  await studio.close();
  rmSync(fx.root, { recursive: true, force: true });
});

const post = (body: Record<string, unknown>) =>
  fetch(`${studio.url}api/generate`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: "tiny", ...body }),
  });

test("a job over the memory or time budget is refused with 422 before it is queued, saying what fits", async () => {
  const big = await post({ count: 64, size: 128, steps: 2 });
  assert.equal(big.status, 422);
  const { error } = (await big.json()) as { error: string };
  assert.match(
    error,
    /^count 64 at size 128 needs about [\d.]+ GB of memory for model "tiny", over this studio's budget of 400 MB per job \(diffuse serve --max-job-memory\); (at size 128 count \d+ fits, or lower the size|lower the size)$/,
  );
  // what it says fits is admitted
  const fits = /count (\d+) fits/.exec(error);
  if (fits) {
    const cost = (await studio.catalog.cost((await studio.catalog.model("tiny"))!))!;
    const n = Number(fits[1]);
    const within = (count: number) => {
      const e = estimateJob(cost, { count, size: 128, steps: 2, guided: true });
      return e.graphBytes + e.modelBytes <= BUDGET;
    };
    assert.ok(within(n) && !within(n + 1), `count ${n} is the largest that fits`);
  }
  const slow = await post({ count: 4, size: 8, steps: 1000 });
  assert.equal(slow.status, 200, "1000 tiny steps fit in 600 s");
  await slow.body?.cancel();
  const tight = await startStudio({ models: [fx.modelDir], port: 0, budget: { seconds: 1 } });
  try {
    const r = await fetch(`${tight.url}api/generate`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "tiny", count: 64, size: 64, steps: 1000 }),
    });
    assert.equal(r.status, 422);
    assert.match(
      ((await r.json()) as { error: string }).error,
      /^steps 1000 with count 64 at size 64 would take about \d+ (s|min) for model "tiny" on this machine, over this studio's limit of 1 s per job \(diffuse serve --max-job-time\); (steps \d+ fits, or lower count or size|lower count or size)$/,
    );
  } finally {
    await tight.close();
  }
  const info = (await (await fetch(`${studio.url}api/info`)).json()) as { budget: unknown };
  assert.deepEqual(info.budget, { memoryBytes: BUDGET, seconds: 600 });
});

test("after a sequence of job shapes the studio's RSS is back within 1.5× idle plus one job", {
  timeout: 120_000,
}, async () => {
  const rss = () => process.memoryUsage().rss;
  const run = async (count: number, size: number) => {
    const r = await generate(studio.url, { model: "tiny", steps: 2, count, size });
    assert.equal(r.status, 200, r.error);
    assert.equal(r.events.at(-1)?.event, "done");
  };
  await run(1, 8); // the worker and ONNX Runtime started: the studio's idle state
  const idle = rss();
  let high = idle;
  for (const [count, size] of [
    [16, 32],
    [16, 36],
    [16, 40],
    [16, 44],
    [16, 48],
    [16, 52],
    [12, 48],
    [20, 40],
    [24, 36],
    [8, 64],
  ] as const) {
    await run(count, size);
    high = Math.max(high, rss());
  }
  const mb = (n: number) => `${Math.round(n / 2 ** 20)} MB`;
  console.log(`# idle ${mb(idle)}, highest ${mb(high)}, after ${mb(rss())}, budget ${mb(BUDGET)}`);
  assert.ok(
    rss() <= 1.5 * idle + BUDGET,
    `RSS ${mb(rss())} after the sequence is over 1.5 × idle ${mb(idle)} + one job ${mb(BUDGET)}`,
  );
});

test("--max-job-memory takes sizes such as 4G or 512M, and says so otherwise", () => {
  assert.equal(parseBytes("4G", "x"), 4 * 2 ** 30);
  assert.equal(parseBytes("512m", "x"), 512 * 2 ** 20);
  assert.equal(parseBytes("1.5GiB", "x"), 1.5 * 2 ** 30);
  assert.equal(parseBytes("300000000", "x"), 300000000);
  const bin = fileURLToPath(new URL("../../bin/diffuse.js", import.meta.url));
  const r = spawnSync(process.execPath, [bin, "serve", "--max-job-memory", "lots"], { encoding: "utf8" });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /--max-job-memory must be a size such as 4G or 512M \(at least 1M\), got "lots"/);
});
