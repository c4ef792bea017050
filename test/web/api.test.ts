import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { after, before, test } from "node:test";
import { pngChunks, readPngText } from "../../src/io/png.ts";
import { type Studio, startStudio } from "../../src/web/server.ts";
import { generate, postJson, rawGet } from "./client.ts";
import { type Fixture, makeFixture } from "./fixture.ts";

let fx: Fixture;
let studio: Studio;
let base: string;

before(async () => {
  fx = await makeFixture();
  studio = await startStudio({ models: [fx.modelDir], runs: [fx.runsDir], port: 0 });
  base = studio.url;
});

after(async () => {
  await studio.close();
  rmSync(fx.root, { recursive: true, force: true });
});

test("info lists the served model, samplers, limits and runs", async () => {
  const info = (await (await fetch(`${base}api/info`)).json()) as {
    models: { id: string; numClasses: number; sampleSize: number; schedulers: string[]; source: string }[];
    schedulers: string[];
    limits: { steps: { max: number } };
    runs: { id: string; steps: number }[];
  };
  const tiny = info.models.find((m) => m.id === "tiny");
  assert.ok(tiny, JSON.stringify(info.models));
  assert.equal(tiny.numClasses, 3);
  assert.equal(tiny.sampleSize, 8);
  assert.ok(tiny.schedulers.includes("ddim") && !tiny.schedulers.includes("flow-euler"));
  assert.ok(info.schedulers.includes("dpm++2m"));
  assert.equal(info.limits.steps.max, 1000); // the sampling schema's range, as the CLI's
  assert.deepEqual(
    info.runs.map((r) => [r.id, r.steps]),
    [["toy-run", 100]],
  );
});

test("generation end to end: queued, start, every step, done; PNG with parameters; APNG trajectory; same seed, same image", async () => {
  const body = { model: "tiny", label: "all", scheduler: "ddim", steps: 6, guidance: 2, seed: 5, count: 3 };
  const r = await generate(base, body);
  assert.equal(r.status, 200, r.error);
  const kinds = r.events.map((e) => e.event);
  assert.equal(kinds[0], "queued");
  assert.ok(kinds.includes("start"));
  const steps = r.events.filter((e) => e.event === "step");
  assert.deepEqual(
    steps.map((s) => s.data["i"]),
    [0, 1, 2, 3, 4, 5],
  );
  for (const s of steps) {
    assert.match(String(s.data["x"]), /^data:image\/png;base64,/);
    assert.match(String(s.data["x0"]), /^data:image\/png;base64,/);
  }
  assert.equal(kinds.at(-1), "done");
  const done = r.events.at(-1)!.data as {
    id: string;
    image: string;
    animation: string;
    params: { seed: number };
  };
  assert.equal(done.params.seed, 5);

  const png = new Uint8Array(await (await fetch(new URL(done.image, base))).arrayBuffer());
  const text = readPngText(png);
  assert.match(
    text["parameters"]!,
    /model: tiny, labels: all, scheduler: ddim, steps: 6, guidance: 2,.*seed: 5, count: 3/,
  );
  const anim = new Uint8Array(await (await fetch(new URL(done.animation, base))).arrayBuffer());
  const chunkTypes = [...pngChunks(anim)].map((c) => c.type);
  assert.ok(chunkTypes.includes("acTL") && chunkTypes.includes("fdAT"), chunkTypes.join(","));
  const dl = await fetch(new URL(`${done.image}?download=1`, base));
  assert.match(dl.headers.get("content-disposition")!, /^attachment; filename="diffuse-tiny-seed5\.png"/);

  const gallery = (await (await fetch(`${base}api/gallery`)).json()) as { entries: { id: string }[] };
  assert.equal(gallery.entries[0]!.id, done.id);

  // a re-run with the same parameters gives the same pixels
  const again = await generate(base, body);
  const done2 = again.events.at(-1)!.data as { image: string };
  const png2 = new Uint8Array(await (await fetch(new URL(done2.image, base))).arrayBuffer());
  assert.deepEqual(png2, png);
});

test("every bad parameter is answered 400 with a message that names it", async () => {
  const ok = { model: "tiny" };
  const cases: [unknown, RegExp][] = [
    [[1, 2], /must be a JSON object/],
    [{ ...ok, foo: 1 }, /unknown field "foo"; the fields are model, label/],
    [{}, /model must be the id of a served model \(tiny\)/],
    [{ model: "nope" }, /unknown model "nope"; this studio serves "tiny"/],
    [{ model: "../../etc/passwd" }, /unknown model "..\/..\/etc\/passwd"/],
    [{ model: 3 }, /model must be the id/],
    [{ ...ok, scheduler: "bogus" }, /unknown scheduler "bogus"; use one of ddpm, ddim/],
    [{ ...ok, scheduler: "flow-euler" }, /^the scheduler flow-euler needs a flow-matching model/],
    [{ ...ok, scheduler: "ddim", karras: true }, /^Karras sigmas apply to dpm\+\+2m.*not ddim/],
    [{ ...ok, karras: "yes" }, /karras must be true or false/],
    [{ ...ok, steps: 0 }, /^steps must be an integer from 1 to 1000, got 0$/],
    [{ ...ok, steps: 5000 }, /^steps must be an integer from 1 to 1000, got 5000$/],
    [{ ...ok, steps: 2.5 }, /steps must be an integer/],
    [{ ...ok, steps: "20" }, /steps must be an integer from 1 to 1000, got "20"/],
    [{ ...ok, count: 0 }, /count must be an integer from 1 to 64, got 0/],
    [{ ...ok, count: 65 }, /count must be an integer from 1 to 64/],
    [{ ...ok, guidance: -1 }, /^guidance must be a number from 0 to 50, got -1$/],
    [{ ...ok, guidance: 51 }, /guidance must be a number from 0 to 50/],
    [{ ...ok, guidanceRescale: 2 }, /^guidance rescale must be a number from 0 to 1, got 2$/],
    [{ ...ok, eta: -0.1 }, /eta must be a number from 0 to 1/],
    [{ ...ok, seed: -1 }, /seed must be an integer from 0 to 4294967295/],
    [{ ...ok, seed: 2 ** 32 }, /seed must be an integer/],
    [{ ...ok, size: 4 }, /size must be an integer from 8 to 128, got 4/],
    [{ ...ok, size: 256 }, /size must be an integer from 8 to 128/],
    [{ ...ok, size: 9 }, /size must be a multiple of 2 for model "tiny", got 9/],
    [{ ...ok, label: 3 }, /label must be a class of model "tiny" \(an integer from 0 to 2\) or "all", got 3/],
    [{ ...ok, label: -1 }, /label must be a class/],
    [{ ...ok, label: "cat" }, /label must be a class.*got "cat"/],
    [{ ...ok, prompt: "a cat" }, /takes a class label, not a prompt/],
  ];
  for (const [body, message] of cases) {
    const r = await generate(base, body);
    assert.equal(r.status, 400, `${JSON.stringify(body)} → ${r.status}`);
    assert.match(r.error ?? "", message, JSON.stringify(body));
  }
  const notJson = await postJson(`${base}api/generate`, "{steps: 3");
  assert.equal(notJson.status, 400);
  assert.match(((await notJson.json()) as { error: string }).error, /not valid JSON/);
  const plain = await fetch(`${base}api/generate`, {
    method: "POST",
    headers: { "content-type": "text/plain" },
    body: "{}",
  });
  assert.equal(plain.status, 415);
  assert.match(((await plain.json()) as { error: string }).error, /application\/json/);
  const big = await postJson(`${base}api/generate`, { model: "tiny", pad: "x".repeat(20_000) });
  assert.equal(big.status, 413);
  const get = await fetch(`${base}api/generate`);
  assert.equal(get.status, 405);
  assert.match(((await get.json()) as { error: string }).error, /takes POST, not GET/);
  assert.equal((await fetch(`${base}api/nothing`)).status, 404);
  const gal = await fetch(`${base}api/gallery/999/image.png`);
  assert.equal(gal.status, 404);
  assert.match(((await gal.json()) as { error: string }).error, /no generation "999"/);
  const run = await fetch(`${base}api/runs/nope/metrics`);
  assert.equal(run.status, 404);
  assert.match(
    ((await run.json()) as { error: string }).error,
    /no training run "nope"; served runs: toy-run/,
  );
  assert.equal((await fetch(`${base}api/runs/toy-run/metrics?from=-3`)).status, 400);
});

test("paths from requests never leave the served folders", async () => {
  const { symlinkSync } = await import("node:fs");
  const { join } = await import("node:path");
  symlinkSync(join(fx.root, "tiny", "model_index.json"), join(fx.runDir, "samples", "step-000099.png"));
  const attempts: [string, number][] = [
    ["/static/../../../package.json", 400],
    ["/static/..%2f..%2f..%2fpackage.json", 400],
    ["/static/%2e%2e/%2e%2e/%2e%2e/package.json", 400],
    ["/static/..%5c..%5cpackage.json", 400],
    ["/static/package.json", 404],
    ["/static/server.ts", 404],
    ["/static/%00app.js", 400],
    ["/static/%E0%A4%A", 400],
    ["/../../../../etc/passwd", 400],
    ["/api/runs/..%2f..%2f/metrics", 400],
    ["/api/runs/../../tiny/metrics", 400],
    ["/api/runs/toy-run/samples/..%2fconfig.json", 400],
    ["/api/runs/toy-run/samples/config.json", 400],
    ["/api/runs/toy-run/samples/step-000010.png%2f..%2f..%2fconfig.json", 400],
    ["/api/runs/toy-run/samples/step-000099.png", 403],
    ["/api/runs/toy-run/samples/step-000011.png", 404],
  ];
  for (const [path, status] of attempts) {
    const r = await rawGet(base, path);
    assert.equal(r.status, status, `${path} → ${r.status} ${r.body}`);
    assert.doesNotMatch(r.body, /"name": "diffuse"|DDPMPipeline|"training"/, path);
  }
  assert.equal((await rawGet(base, "/static/app.js")).status, 200);
  assert.equal((await rawGet(base, "/api/runs/toy-run/samples/step-000010.png")).status, 200);
  // DNS rebinding: a loopback studio answers only loopback host names
  const evil = await rawGet(base, "/api/info", { host: "evil.example:80" });
  assert.equal(evil.status, 403);
  assert.match(evil.body, /must be addressed to 127\.0\.0\.1 or localhost/);
});

test("a distilled student is offered with its teacher, method and few-step defaults", async () => {
  const s = await startStudio({ models: ["mnist-lcm", "mnist"], runs: [], port: 0 });
  try {
    const info = (await (await fetch(`${s.url}api/info`)).json()) as {
      models: {
        id: string;
        distilled: { method: string; teacher: string | null } | null;
        defaults: { scheduler: string; steps: number; guidance: number };
      }[];
    };
    const lcm = info.models.find((m) => m.id === "mnist-lcm");
    const teacher = info.models.find((m) => m.id === "mnist");
    assert.deepEqual(lcm?.distilled, { method: "lcm", teacher: "mnist" });
    assert.deepEqual([lcm?.defaults.scheduler, lcm?.defaults.steps, lcm?.defaults.guidance], ["lcm", 4, 1]);
    assert.equal(teacher?.distilled, null);
  } finally {
    await s.close();
  }
});
