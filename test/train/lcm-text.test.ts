/**
 * `diffuse distill --method lcm` of a text-to-image teacher (latent consistency distillation, Luo et
 * al. 2023) on the tiny StableDiffusionPipeline of test/support/tiny-sd.ts and a caption folder: the
 * loss graph runs and a short run brings the student's one-step latents closer to the teacher's
 * guided ODE end point for the same prompts and noise; a stopped and resumed run ends bit-identical;
 * the export is a StableDiffusionPipeline folder with an LCMScheduler that loads and draws from a
 * prompt (and a preview grid is written); bad configs are refused naming the field.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { after, before, test } from "node:test";
import { run as finetune } from "../../src/cli/finetune.ts";
import { readSafetensors } from "../../src/io/safetensors.ts";
import { generate } from "../../src/pipelines/generate.ts";
import { samplingDefaults } from "../../src/pipelines/options.ts";
import { disposePipeline, type LoadedPipeline, loadPipeline } from "../../src/pipelines/pipeline-dir.ts";
import { schedulerFor } from "../../src/pipelines/scheduler-names.ts";
import { latentDecoder, promptConditions } from "../../src/pipelines/text-to-image.ts";
import type { WorkerContext } from "../../src/runtime/worker.ts";
import { Scheduler } from "../../src/samplers/scheduler.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import { resolveDistillConfig } from "../../src/train/distill-config.ts";
import { distillRun } from "../../src/train/distill-trainer.ts";
import type { TrainEvent } from "../../src/train/trainer.ts";
import { makeCaptionShapes } from "../support/caption-shapes.ts";
import { quietly } from "../support/quiet.ts";
import { makeTinySd, TINY_SD_CAPTIONS } from "../support/tiny-sd.ts";

let sd: string;
let teacherDir: string;
let root: string;
let images: string;

function ctx(events: TrainEvent[] = []): WorkerContext<TrainEvent> {
  return { post: (e) => events.push(e), signal: new AbortController().signal };
}

// the data: 12 coloured 16×16 squares, two per caption of the tiny tokenizer
before(async () => {
  sd = await makeTinySd();
  root = dirname(sd);
  images = makeCaptionShapes(join(root, "shapes"));
  // the teacher: the random tiny pipeline fully fine-tuned on them briefly (a random U-Net's ODE has no sensible end)
  const run = join(root, "teacher");
  await quietly(() =>
    finetune([
      ...["--model", sd, "--data", images, "--method", "full", "--steps", "60", "--batch-size", "6"],
      ...["--lr", "3e-3", "--set", "output.sample_every=0", "--set", "output.checkpoint_every=60"],
      ...["--out", run],
    ]),
  );
  teacherDir = join(run, "model");
});
after(() => rmSync(root, { recursive: true, force: true }));

const GUIDANCE = 3;

const config = (over: { steps?: number; lr?: number; sampleEvery?: number } = {}) => ({
  method: "lcm",
  teacher: teacherDir,
  lcm: { solver_steps: 10, guidance: GUIDANCE, distance: "l2" },
  data: { dataset: "folder", path: images, size: 16 },
  training: {
    steps: over.steps ?? 4,
    batch_size: 6,
    lr: over.lr ?? 1e-3,
    warmup_steps: 0,
    seed: 3,
    threads: 2,
  },
  output: { checkpoint_every: 1000, sample_every: over.sampleEvery ?? 0, log_every: 1, sample_steps: 2 },
});

const PROMPTS = [...TINY_SD_CAPTIONS, ...TINY_SD_CAPTIONS];

/** The latents themselves, shrunk so that generate's clamp to [0, 1] does not bite: z ↦ z/S. */
const S = 20;
const latents = (z: HostTensor<"float32">) =>
  Promise.resolve(
    new HostTensor<"float32">(
      Float32Array.from(z.data, (v) => v / S),
      z.shape,
    ),
  );

/** Mean squared distance of the student's one-step latents from the teacher's guided 10-step DDIM ones, same noise. */
async function oneStepError(student: LoadedPipeline, teacher: LoadedPipeline): Promise<number> {
  const conditions = await promptConditions(teacher.text!, PROMPTS);
  const ddim = Scheduler.fromConfig({
    ...teacher.schedulerConfig,
    _class_name: "DDIMScheduler",
    timestep_spacing: "trailing",
  });
  const common = { conditions, seed: 9, size: 8, decode: latents };
  const ode = await generate(teacher.denoiser, ddim, { ...common, steps: 10, guidance: GUIDANCE });
  const lcm = schedulerFor({ name: "lcm" }, student.schedulerConfig);
  const one = await generate(student.denoiser, lcm, { ...common, steps: 1, guidance: 1 });
  let s = 0;
  for (let i = 0; i < one.size; i++) s += (2 * S * (one.data[i]! - ode.data[i]!)) ** 2; // [0, 1] → [−1, 1] → z
  return s / one.size;
}

test("LCM of a text-to-image teacher: the one-step student approaches the teacher's guided ODE end point", async (t) => {
  const events: TrainEvent[] = [];
  const zeroDir = join(root, "zero");
  await distillRun({ config: config({ steps: 1, lr: 0 }), outDir: zeroDir }, ctx());
  const teacher = await loadPipeline(teacherDir);
  const zero = await loadPipeline(zeroDir);
  const before = await oneStepError(zero, teacher);
  const dir = join(root, "learn");
  await distillRun({ config: config({ steps: 60, lr: 2e-3, sampleEvery: 60 }), outDir: dir }, ctx(events));
  const student = await loadPipeline(dir);
  const afterErr = await oneStepError(student, teacher);
  t.diagnostic(`one-step latent error vs the teacher's ODE: ${before.toFixed(4)} → ${afterErr.toFixed(4)}`);
  const losses = events.flatMap((e) => (e.kind === "log" ? [e.loss] : []));
  const mean = (a: number[]) => a.reduce((p, q) => p + q, 0) / a.length;
  try {
    assert.ok(losses.every(Number.isFinite) && losses.length === 60);
    assert.ok(
      afterErr < 0.7 * before,
      `one-step error vs the teacher's 10-step DDIM: ${afterErr.toFixed(4)} after 60 steps, ${before.toFixed(4)} before`,
    );
    assert.ok(mean(losses.slice(-15)) < mean(losses.slice(0, 15)), "the consistency loss falls");
    assert.ok(existsSync(join(dir, "samples", "step-000060.png")), "a preview grid is written");
    assert.ok(existsSync(join(dir, "latents.safetensors")), "the latents' moments are cached");
  } finally {
    for (const p of [teacher, zero, student]) disposePipeline(p);
  }
});

test("a text-to-image distillation resumes bit-identically; the student is a StableDiffusionPipeline that draws from a prompt", async () => {
  const a = join(root, "a");
  const b = join(root, "b");
  await distillRun({ config: config(), outDir: a }, ctx());
  assert.equal((await distillRun({ config: config(), outDir: b, stopAfter: 2 }, ctx())).step, 2);
  const evB: TrainEvent[] = [];
  assert.equal((await distillRun({ config: config(), outDir: b }, ctx(evB))).step, 4);
  const start = evB.find((e) => e.kind === "start");
  assert.ok(start?.kind === "start" && start.resumed && start.step === 2);
  for (const part of ["unet", "unet_ema"]) {
    const file = (d: string) => join(d, "checkpoint", part, "diffusion_pytorch_model.safetensors");
    const wa = readSafetensors(file(a)).tensors;
    const wb = readSafetensors(file(b)).tensors;
    assert.equal(wa.size, wb.size);
    for (const [k, v] of wa) assert.deepEqual(wb.get(k)!.data, v.data, `${part} ${k} differs after resume`);
  }

  const index = JSON.parse(readFileSync(join(a, "model", "model_index.json"), "utf8")) as Record<
    string,
    unknown
  >;
  assert.equal(index["_class_name"], "StableDiffusionPipeline");
  assert.deepEqual(index["scheduler"], ["diffusers", "LCMScheduler"]);
  const pipe = await loadPipeline(a);
  try {
    assert.ok(pipe.text && pipe.vae);
    assert.equal(pipe.schedulerConfig["_class_name"], "LCMScheduler");
    assert.equal(pipe.schedulerConfig["original_inference_steps"], 10);
    assert.equal(pipe.schedulerConfig["prediction_type"], "epsilon");
    const d = samplingDefaults(pipe);
    assert.deepEqual([d.scheduler, d.steps, d.guidance], ["lcm", 4, 1]);
    const from = pipe.info["distilledFrom"] as { guidance: number; teacher: string };
    assert.equal(from.guidance, GUIDANCE);
    const img = await generate(pipe.denoiser, schedulerFor({ name: "lcm" }, pipe.schedulerConfig), {
      conditions: await promptConditions(pipe.text, ["a red circle on a white background"]),
      steps: 4,
      guidance: 1,
      seed: 0,
      size: 8,
      decode: latentDecoder(pipe.vae),
    });
    assert.deepEqual(img.shape, [1, 3, 16, 16]);
    assert.ok(img.data.every((v) => Number.isFinite(v)));
  } finally {
    disposePipeline(pipe);
  }
});

test("text-to-image distill config errors name the field", async () => {
  assert.throws(
    () => resolveDistillConfig({ teacher: teacherDir, data: { dataset: "coco" } }),
    /data\.dataset.*"emoji"/,
  );
  await assert.rejects(
    distillRun({ config: { ...config(), data: { dataset: "mnist" } }, outDir: join(root, "e1") }, ctx()),
    /data\.dataset must be "emoji" or "folder"/,
  );
  await assert.rejects(
    distillRun(
      {
        config: { ...config(), data: { dataset: "folder", path: images, size: 18 } },
        outDir: join(root, "e2"),
      },
      ctx(),
    ),
    /data\.size 18 does not fit the teacher/,
  );
});
