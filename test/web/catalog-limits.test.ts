// A served run whose exported model has a hostile config (layers_per_block: 1000000) is left out of
// the studio's model list at once, with the reason in /api/info and in `diffuse serve`'s output;
// the other models are served as usual.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { UNet2DModel } from "../../src/models/unet/model.ts";
import { savePipeline } from "../../src/pipelines/pipeline-dir.ts";
import { type Studio, startStudio } from "../../src/web/server.ts";
import { type Fixture, makeFixture, metricLines, TINY_UNET } from "./fixture.ts";

const bin = fileURLToPath(new URL("../../bin/diffuse.js", import.meta.url));
let fx: Fixture;
let hostileRuns: string;

before(async () => {
  fx = await makeFixture();
  hostileRuns = join(fx.root, "hostile-runs");
  const run = join(hostileRuns, "big");
  mkdirSync(run, { recursive: true });
  writeFileSync(join(run, "metrics.jsonl"), metricLines(1, 2));
  await savePipeline(
    join(run, "model"),
    UNet2DModel.fromConfig(TINY_UNET),
    { _class_name: "DDPMScheduler" },
    {
      numClasses: 3,
    },
  );
  writeFileSync(
    join(run, "model", "unet", "config.json"),
    JSON.stringify({ _class_name: "UNet2DModel", ...TINY_UNET, layers_per_block: 1_000_000 }),
  );
});

after(() => rmSync(fx.root, { recursive: true, force: true }));

test("the studio leaves a hostile model out at once and says why", { timeout: 30_000 }, async () => {
  let studio: Studio | undefined;
  try {
    const t0 = performance.now();
    studio = await startStudio({ models: [fx.modelDir], runs: [hostileRuns], port: 0 });
    const info = (await (await fetch(`${studio.url}api/info`)).json()) as {
      models: { id: string }[];
      problems: { id: string; error: string }[];
    };
    assert.ok(performance.now() - t0 < 5000, "listing took over 5 s");
    assert.deepEqual(
      info.models.map((m) => m.id),
      ["tiny"],
    );
    assert.equal(info.problems.length, 1);
    assert.equal(info.problems[0]!.id, "run-big");
    assert.match(info.problems[0]!.error, /"layers_per_block" is 1000000; use an integer ≥ 1, at most 128/);
  } finally {
    await studio?.close();
  }
});

test("diffuse serve opens its port and warns of the model it left out", { timeout: 60_000 }, async () => {
  const child = spawn(
    process.execPath,
    [bin, "serve", "--model", fx.modelDir, "--runs", hostileRuns, "--port", "0"],
    {
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  let out = "";
  const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no URL within 30 s:\n${out}`)), 30_000);
    const onData = (b: Buffer) => {
      out += b.toString();
      if (/diffuse studio on http/.test(out)) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
  });
  assert.match(
    out,
    /warning: model run-big is left out: .*"layers_per_block" is 1000000; use an integer ≥ 1, at most 128/,
  );
  assert.match(out, /models: tiny; runs: 1/);
  child.kill("SIGINT");
  assert.equal(await exited, 0);
});
