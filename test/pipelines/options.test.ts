// The one sampling-options schema: its checks and messages, the CLI and the studio refusing the same
// values with the same words, defaults taken from the model's diffuse.json, and the parameters text.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { UsageError } from "../../src/cli/args.ts";
import { run } from "../../src/cli/sample.ts";
import { readPngText } from "../../src/io/png.ts";
import { UNet2DModel } from "../../src/models/unet/model.ts";
import {
  CLASS_GUIDANCE,
  checkSamplingOption,
  checkSamplingOptions,
  parametersText,
  SAMPLING_OPTIONS,
  SamplingOptionError,
  samplingDefaults,
} from "../../src/pipelines/options.ts";
import { DEFAULT_SCHEDULER, loadPipeline, savePipeline } from "../../src/pipelines/pipeline-dir.ts";
import { type Studio, startStudio } from "../../src/web/server.ts";
import { quietly } from "../support/quiet.ts";
import { generate } from "../web/client.ts";
import { TINY_UNET } from "../web/fixture.ts";

const dir = mkdtempSync(join(tmpdir(), "diffuse-options-"));
const modelDir = join(dir, "tiny");
let studio: Studio;

before(async () => {
  // a tiny class-conditional model that recommends its own sampling settings
  await savePipeline(
    modelDir,
    UNet2DModel.fromConfig(TINY_UNET, { seed: 1 }),
    { ...DEFAULT_SCHEDULER },
    {
      numClasses: 3,
      sampling: { scheduler: "ddim", steps: 3, guidance: 2.5 },
    },
  );
  studio = await startStudio({ models: [modelDir], port: 0 });
});

after(async () => {
  await studio?.close();
  rmSync(dir, { recursive: true, force: true });
});

const sample = (argv: string[]) => quietly(() => run(argv));

/** The message a rejected promise carries. */
async function messageOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return (e as Error).message;
  }
  assert.fail("expected a rejection");
}

test("each option's check names the option, its range and the bad value", () => {
  assert.equal(checkSamplingOption("steps", 20), 20);
  assert.equal(checkSamplingOption("karras", true), true);
  assert.equal(checkSamplingOption("scheduler", "ddim"), "ddim");
  const cases: [Parameters<typeof checkSamplingOption>[0], unknown, string][] = [
    ["steps", 5000, "steps must be an integer from 1 to 1000, got 5000"],
    ["steps", 0, "steps must be an integer from 1 to 1000, got 0"],
    ["steps", 2.5, "steps must be an integer from 1 to 1000, got 2.5"],
    ["steps", "20", 'steps must be an integer from 1 to 1000, got "20"'],
    ["guidance", -1, "guidance must be a number from 0 to 50, got -1"],
    ["guidance", 51, "guidance must be a number from 0 to 50, got 51"],
    ["guidanceRescale", 2, "guidance rescale must be a number from 0 to 1, got 2"],
    ["eta", 2, "eta must be a number from 0 to 1, got 2"],
    ["seed", -1, "seed must be an integer from 0 to 4294967295, got -1"],
    ["karras", "yes", 'karras must be true or false, got "yes"'],
  ];
  for (const [field, value, message] of cases) {
    assert.throws(
      () => checkSamplingOption(field, value),
      (e: Error) => {
        assert.ok(e instanceof SamplingOptionError);
        assert.equal(e.field, field);
        assert.equal(e.message, message);
        return true;
      },
    );
  }
  assert.throws(() => checkSamplingOption("scheduler", 3), /scheduler must be a sampler name \(ddpm, ddim/);
  // no flag names or HTTP words in the schema's messages
  for (const rule of Object.values(SAMPLING_OPTIONS)) assert.doesNotMatch(rule.name, /--|[A-Z]/);
  assert.deepEqual(checkSamplingOptions({ steps: 7, guidance: undefined }), { steps: 7 });
});

test("the CLI and the studio refuse the same out-of-range values with the same message", async () => {
  const cases: [string, string, unknown][] = [
    ["steps", "steps", 0],
    ["steps", "steps", 5000],
    ["steps", "steps", 2.5],
    ["guidance", "guidance", -1],
    ["guidance", "guidance", 51],
    ["guidance-rescale", "guidanceRescale", 2],
    ["eta", "eta", 2],
    ["eta", "eta", -0.1],
    ["seed", "seed", -1],
    ["seed", "seed", 2 ** 32],
  ];
  for (const [flag, field, value] of cases) {
    const cli = await sample(["--model", modelDir, `--${flag}=${value}`, "--out", join(dir, "x")]).then(
      () => assert.fail(`--${flag} ${value} was accepted`),
      (e: Error) => {
        assert.ok(e instanceof UsageError, e.message);
        return e.message;
      },
    );
    const r = await generate(studio.url, { model: "tiny", [field]: value });
    assert.equal(r.status, 400, `${field} ${value}`);
    // the CLI names its flag, then says exactly what the studio says
    assert.equal(cli, `--${flag}: ${r.error}`);
    assert.match(r.error ?? "", new RegExp(`got ${String(value).replace(".", "\\.")}$`));
  }
  // text that is no number: the same sentence, the value quoted
  const cliText = await messageOf(sample(["--steps", "many", "--out", join(dir, "x")]));
  const http = await generate(studio.url, { model: "tiny", steps: "many" });
  assert.equal(cliText, `--steps: ${http.error}`);
  assert.equal(http.error, 'steps must be an integer from 1 to 1000, got "many"');
});

test("defaults come from the model's diffuse.json sampling, else dpm++2m / flow-euler, 20 steps, guidance 1.5 or 1", () => {
  const base = { dir, schedulerConfig: { ...DEFAULT_SCHEDULER } };
  assert.deepEqual(
    samplingDefaults({
      ...base,
      info: { numClasses: 10, sampling: { scheduler: "heun", steps: 9, guidance: 4 } },
    }),
    { scheduler: "heun", karras: false, steps: 9, guidance: 4, guidanceRescale: 0, eta: 0, seed: 0 },
  );
  const cond = samplingDefaults({ ...base, info: { numClasses: 10 } });
  assert.deepEqual([cond.scheduler, cond.steps, cond.guidance], ["dpm++2m", 20, CLASS_GUIDANCE]);
  assert.equal(CLASS_GUIDANCE, 1.5);
  assert.equal(samplingDefaults({ ...base, info: { numClasses: null } }).guidance, 1);
  const flow = { _class_name: "FlowMatchEulerDiscreteScheduler", num_train_timesteps: 1000, shift: 1 };
  assert.equal(
    samplingDefaults({ dir, schedulerConfig: flow, info: { numClasses: 10 } }).scheduler,
    "flow-euler",
  );
  // a recommendation is checked like any given value, and the error says where it came from
  assert.throws(
    () => samplingDefaults({ ...base, info: { numClasses: 10, sampling: { steps: 0 } } }),
    /diffuse\.json: sampling\.steps: steps must be an integer from 1 to 1000, got 0/,
  );
  assert.throws(
    () => samplingDefaults({ ...base, info: { numClasses: 10, sampling: { scheduler: "flow-euler" } } }),
    /diffuse\.json: sampling\.scheduler: the scheduler flow-euler needs a flow-matching model/,
  );
});

test("the bundled MNIST model recommends dpm++2m, 20 steps, guidance 1.5, and diffuse sample starts from it", async () => {
  const mnist = await loadPipeline("mnist");
  const d = samplingDefaults(mnist);
  mnist.denoiser.dispose();
  assert.deepEqual([d.scheduler, d.steps, d.guidance], ["dpm++2m", 20, 1.5]);
  // the tiny model recommends ddim, 3 steps, guidance 2.5: no flags, and the grid says so
  const out = join(dir, "defaults");
  await sample(["--model", modelDir, "--labels", "1", "--out", out]);
  const text = readPngText(readFileSync(join(out, "grid.png")))["parameters"] ?? "";
  assert.match(text, /scheduler: ddim, steps: 3, guidance: 2\.5, guidance_rescale: 0, eta: 0, seed: 0/);
});

test("the studio's catalog exposes the model's defaults and a request without options uses them", async () => {
  const info = (await (await fetch(`${studio.url}api/info`)).json()) as {
    models: { id: string; defaults: Record<string, unknown> }[];
    limits: Record<string, { max: number }>;
  };
  const tiny = info.models.find((m) => m.id === "tiny")!;
  assert.deepEqual(tiny.defaults, {
    scheduler: "ddim",
    karras: false,
    steps: 3,
    guidance: 2.5,
    guidanceRescale: 0,
    eta: 0,
    seed: 0,
  });
  // the page's ranges are the schema's (the CLI's), count and size the studio's resource limits
  assert.equal(info.limits["steps"]!.max, SAMPLING_OPTIONS.steps.max);
  assert.equal(info.limits["guidance"]!.max, SAMPLING_OPTIONS.guidance.max);
  const r = await generate(studio.url, { model: "tiny", label: 2, count: 2 });
  assert.equal(r.status, 200, r.error);
  const done = r.events.at(-1)!.data as { params: Record<string, unknown> };
  assert.deepEqual(
    [done.params["scheduler"], done.params["steps"], done.params["guidance"]],
    ["ddim", 3, 2.5],
  );
});

test("parametersText carries every option and the context, in one line", () => {
  const text = parametersText(
    {
      scheduler: "dpm++2m",
      karras: true,
      steps: 25,
      guidance: 1.5,
      guidanceRescale: 0.7,
      eta: 0.3,
      seed: 42,
    },
    { model: "mnist", step: 1000, labels: [3, 7], extra: { count: 2, size: 28 } },
  );
  assert.equal(
    text,
    "model: mnist, step: 1000, labels: 3,7, scheduler: dpm++2m (karras), steps: 25, guidance: 1.5, " +
      "guidance_rescale: 0.7, eta: 0.3, seed: 42, count: 2, size: 28",
  );
  const bare = parametersText({
    scheduler: "ddim",
    karras: false,
    steps: 3,
    guidance: 1,
    guidanceRescale: 0,
    eta: 0,
    seed: 0,
  });
  assert.equal(bare, "scheduler: ddim, steps: 3, guidance: 1, guidance_rescale: 0, eta: 0, seed: 0");
  assert.match(
    parametersText(
      { scheduler: "ddpm", karras: false, steps: 1, guidance: 1, guidanceRescale: 0, eta: 0, seed: 0 },
      { labels: null },
    ),
    /^labels: none, /,
  );
});
