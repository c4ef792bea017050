// `diffuse sample` with the bundled model: what it writes (grid.png with its parameters,
// samples.safetensors), how bad input is refused, and how sampler names become diffusers configs.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { UsageError } from "../../src/cli/args.ts";
import { run } from "../../src/cli/sample.ts";
import { readPngText } from "../../src/io/png.ts";
import { readSafetensors } from "../../src/io/safetensors.ts";
import { DEFAULT_SCHEDULER } from "../../src/pipelines/pipeline-dir.ts";
import { SCHEDULER_NAMES, schedulerFor } from "../../src/pipelines/scheduler-names.ts";
import { Scheduler } from "../../src/samplers/scheduler.ts";
import { quietly } from "../support/quiet.ts";

const dir = mkdtempSync(join(tmpdir(), "diffuse-sample-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const sample = (argv: string[]) => quietly(() => run(argv));

test("writes grid.png with its parameters and samples.safetensors (F32 images in [0, 1], I64 labels)", async () => {
  const out = join(dir, "ok");
  await sample([
    "--model",
    "mnist",
    "--scheduler",
    "ddim",
    "--steps",
    "3",
    "--labels",
    "3,7",
    "--seed",
    "5",
    "--out",
    out,
  ]);
  const text = readPngText(readFileSync(join(out, "grid.png")));
  assert.match(text["parameters"] ?? "", /labels: 3,7, scheduler: ddim/);
  assert.match(text["parameters"] ?? "", /steps: 3/);
  assert.match(text["parameters"] ?? "", /seed: 5/);
  // no --guidance: the model's recommendation (assets/models/mnist/diffuse.json)
  assert.match(text["parameters"] ?? "", /guidance: 1\.5,/);
  const st = readSafetensors(join(out, "samples.safetensors"));
  assert.equal(st.dtypes.get("images"), "F32");
  assert.equal(st.dtypes.get("labels"), "I64");
  const images = st.tensors.get("images")!;
  assert.deepEqual(images.shape, [2, 1, 28, 28]); // the bundled model draws 28×28 digits
  assert.ok((images.data as Float32Array).every((v) => v >= 0 && v <= 1));
  assert.deepEqual([...(st.tensors.get("labels")!.data as BigInt64Array)], [3n, 7n]);
});

test("bad input is refused with a message that names it", async () => {
  const out = join(dir, "bad");
  await assert.rejects(sample(["--labels", "3,10", "--out", out]), (e: Error) => {
    assert.ok(e instanceof UsageError);
    assert.match(e.message, /"10" is not a class of this model \(0\.\.9/);
    return true;
  });
  await assert.rejects(
    sample(["--scheduler", "dpm-fast", "--out", out]),
    /unknown scheduler "dpm-fast"; use one of .*ddim/,
  );
  await assert.rejects(
    sample(["--scheduler", "flow-euler", "--out", out]),
    /the scheduler flow-euler needs a flow-matching model/,
  );
  await assert.rejects(sample(["--model", join(dir, "nowhere"), "--out", out]), /nowhere/);
  await assert.rejects(sample(["--scheduler", "ddim", "--scheduler-config", "x.json"]), /not both/);
  await assert.rejects(sample(["--steps", "0"]), /--steps: steps must be an integer from 1 to 1000, got 0$/);
  await assert.rejects(
    sample(["--guidance-rescale", "2"]),
    /--guidance-rescale: guidance rescale must be a number from 0 to 1, got 2$/,
  );
  await assert.rejects(
    sample(["--scheduler", "ddim", "--karras", "--out", out]),
    /Karras sigmas apply to dpm\+\+2m, dpm\+\+2m-sde, euler and heun, not ddim/,
  );
});

test("every short name maps to a diffusers class that shares the model's schedule and clipping", () => {
  const model = { ...DEFAULT_SCHEDULER, clip_sample: false };
  for (const name of SCHEDULER_NAMES.filter((n) => n !== "flow-euler")) {
    const s = schedulerFor({ name }, model);
    assert.equal(s.config.numTrainTimesteps, 1000, name);
  }
  assert.equal(schedulerFor({ name: "ddim" }, model).className, "DDIMScheduler");
  assert.equal(schedulerFor({ name: "euler-a" }, model).className, "EulerAncestralDiscreteScheduler");
  // DDIM's own default is clip_sample true; the model's config decides (as diffusers' from_config does)
  assert.equal((schedulerFor({ name: "ddim" }, model).config as { clipSample: boolean }).clipSample, false);
  const clipped = schedulerFor({ name: "ddim" }, { ...model, clip_sample: true });
  assert.equal((clipped.config as { clipSample: boolean }).clipSample, true);
});

test("a schedule the model's config leaves to its class's defaults keeps them under another sampler", () => {
  // a DDPMScheduler config naming no betas trains on DDPM's 0.0001–0.02 linear schedule: LCMScheduler's
  // own defaults (scaled_linear 0.00085–0.012) would sample another schedule
  const bare = { _class_name: "DDPMScheduler", prediction_type: "v_prediction" };
  const ddpm = Scheduler.fromConfig(bare);
  for (const name of ["lcm", "ddim", "dpm++2m", "euler"]) {
    const s = schedulerFor({ name }, bare);
    const c = s.config as {
      betaStart: number;
      betaEnd: number;
      betaSchedule: string;
      predictionType: string;
    };
    assert.deepEqual(
      [c.betaStart, c.betaEnd, c.betaSchedule, c.predictionType],
      [0.0001, 0.02, "linear", "v_prediction"],
      name,
    );
    assert.deepEqual(s.alphasCumprod, ddpm.alphasCumprod, name);
  }
});

test("a flow-matching model samples with flow-euler or DPM-Solver++ on flow sigmas, and nothing else", () => {
  const flow = { _class_name: "FlowMatchEulerDiscreteScheduler", num_train_timesteps: 1000, shift: 3 };
  for (const name of ["dpm++2m", "dpm++2m-sde", "DPMSolverMultistepScheduler"]) {
    const s = schedulerFor({ name }, flow);
    const c = s.config as { sigmaSchedule: string; predictionType: string; flowShift: number };
    assert.equal(s.className, "DPMSolverMultistepScheduler", name);
    assert.deepEqual([c.sigmaSchedule, c.predictionType, c.flowShift], ["flow", "flow_prediction", 3], name);
  }
  assert.equal(schedulerFor({ name: "flow-euler" }, flow).className, "FlowMatchEulerDiscreteScheduler");
  assert.throws(
    () => schedulerFor({ name: "ddim" }, flow),
    /trained with flow matching; use the scheduler flow-euler, dpm\+\+2m or dpm\+\+2m-sde, not ddim/,
  );
  assert.throws(
    () => schedulerFor({ name: "dpm++2m", karras: true }, flow),
    /Karras sigmas do not apply to a flow-matching model/,
  );
});
