/**
 * `diffuse distill --method lcm` end to end on a tiny MNIST U-Net: a short distillation brings the
 * student's one-step samples closer to the teacher's ODE solutions; a run stopped and resumed ends
 * bit-identical to an uninterrupted one; the student folder loads and samples with LCMScheduler at
 * its recommended settings; config errors and `--method reflow` of this (v-prediction) teacher are
 * refused with the fix.
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { run as distillCli } from "../../src/cli/distill.ts";
import { readSafetensors } from "../../src/io/safetensors.ts";
import { generate } from "../../src/pipelines/generate.ts";
import { samplingDefaults } from "../../src/pipelines/options.ts";
import { assetsDir, disposePipeline, loadPipeline } from "../../src/pipelines/pipeline-dir.ts";
import { schedulerFor } from "../../src/pipelines/scheduler-names.ts";
import { resolveDistillConfig } from "../../src/train/distill-config.ts";
import { studentProvenance } from "../../src/train/distill-student.ts";
import { distillRun } from "../../src/train/distill-trainer.ts";
import type { TrainEvent } from "../../src/train/trainer.ts";
import { eventSink, oneStepError, trainTinyMnistTeacher } from "../support/tiny-mnist-teacher.ts";

const tmp = mkdtempSync(join(tmpdir(), "diffuse-lcm-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const ctx = eventSink;

const teacherDir = join(tmp, "teacher");

// a tiny class-conditional v-prediction U-Net, trained briefly on MNIST 28×28
before(async () => {
  await trainTinyMnistTeacher(teacherDir);
});

const distillConfig = (over: { steps?: number; lr?: number } = {}) => ({
  method: "lcm",
  teacher: join(teacherDir, "model"),
  lcm: { solver_steps: 10, guidance: 1.5 },
  data: { dataset: "mnist", size: 28 },
  training: {
    steps: over.steps ?? 4,
    batch_size: 16,
    lr: over.lr ?? 1e-3,
    warmup_steps: 0,
    seed: 2,
    threads: 2,
  },
  output: { checkpoint_every: 1000, sample_every: 0, log_every: 1, sample_steps: 2 },
});

test("a short LCM distillation brings the one-step student closer to the teacher's ODE", async (t) => {
  const dir = join(tmp, "learn");
  const events: TrainEvent[] = [];
  // step 0: the student is the teacher
  await distillRun({ config: distillConfig({ steps: 1, lr: 0 }), outDir: join(tmp, "zero") }, ctx());
  const teacher = await loadPipeline(join(teacherDir, "model"));
  const zero = await loadPipeline(join(tmp, "zero"));
  const before = await oneStepError(zero, teacher);
  await distillRun({ config: distillConfig({ steps: 80, lr: 2e-3 }), outDir: dir }, ctx(events));
  const student = await loadPipeline(dir);
  const afterErr = await oneStepError(student, teacher);
  t.diagnostic(`one-step error vs the teacher's ODE: ${before.toFixed(4)} → ${afterErr.toFixed(4)}`);
  const losses = events.flatMap((e) => (e.kind === "log" ? [e.loss] : []));
  const mean = (a: number[]) => a.reduce((p, q) => p + q, 0) / a.length;
  assert.ok(
    afterErr < 0.7 * before,
    `one-step error vs the teacher's 10-step DDIM: ${afterErr.toFixed(4)} after 80 steps, ${before.toFixed(4)} before`,
  );
  assert.ok(mean(losses.slice(-20)) < mean(losses.slice(0, 20)), "the consistency loss falls");
  for (const p of [teacher, zero, student]) disposePipeline(p);
});

test("a distillation stopped and resumed ends bit-identical to an uninterrupted one; the student samples with LCM", async () => {
  const a = join(tmp, "a");
  const b = join(tmp, "b");
  await distillRun({ config: distillConfig(), outDir: a }, ctx());
  const first = await distillRun({ config: distillConfig(), outDir: b, stopAfter: 2 }, ctx());
  assert.equal(first.step, 2);
  const evB: TrainEvent[] = [];
  const second = await distillRun({ config: distillConfig(), outDir: b }, ctx(evB));
  assert.equal(second.step, 4);
  const start = evB.find((e) => e.kind === "start");
  assert.ok(start?.kind === "start" && start.resumed && start.step === 2);
  for (const part of ["unet", "unet_ema"]) {
    const file = (d: string) => join(d, "checkpoint", part, "diffusion_pytorch_model.safetensors");
    const wa = readSafetensors(file(a)).tensors;
    const wb = readSafetensors(file(b)).tensors;
    assert.equal(wa.size, wb.size);
    for (const [k, v] of wa) assert.deepEqual(wb.get(k)!.data, v.data, `${part} ${k} differs after resume`);
  }
  const steps = readFileSync(join(b, "metrics.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => (JSON.parse(l) as { step: number }).step);
  assert.deepEqual(steps, [1, 2, 3, 4]);
  // a different LCM setting is a different run
  await assert.rejects(
    distillRun({ config: { ...distillConfig(), lcm: { solver_steps: 10, guidance: 2 } }, outDir: b }, ctx()),
    /different config/,
  );

  // the student: an LCMScheduler pipeline folder that samples in 1–8 steps without guidance
  const pipe = await loadPipeline(a);
  try {
    assert.equal(pipe.schedulerConfig["_class_name"], "LCMScheduler");
    assert.equal(pipe.schedulerConfig["original_inference_steps"], 10);
    assert.equal(pipe.schedulerConfig["prediction_type"], "v_prediction");
    const index = JSON.parse(readFileSync(join(a, "model", "model_index.json"), "utf8")) as Record<
      string,
      unknown
    >;
    assert.deepEqual(index["scheduler"], ["diffusers", "LCMScheduler"]);
    const d = samplingDefaults(pipe);
    assert.deepEqual([d.scheduler, d.steps, d.guidance], ["lcm", 4, 1]);
    const sched = schedulerFor({ name: d.scheduler }, pipe.schedulerConfig);
    assert.deepEqual(sched.timesteps(2), [999, 499]);
    for (const steps of [1, 8]) {
      const img = await generate(pipe.denoiser, sched, { labels: [3, 7], steps, guidance: 1, seed: 0 });
      assert.deepEqual(img.shape, [2, 1, 28, 28]);
      assert.ok(img.data.every((v) => Number.isFinite(v)));
    }
    assert.equal((pipe.info["distilledFrom"] as { guidance: number }).guidance, 1.5);
  } finally {
    disposePipeline(pipe);
  }
  assert.ok(existsSync(join(a, "config.json")));
});

test("distill config errors name the field; --method reflow refuses a teacher that is not flow matching", async () => {
  assert.throws(() => resolveDistillConfig({ method: "lcm" }), /"teacher".*--teacher DIR/);
  assert.throws(
    () => resolveDistillConfig({ teacher: "mnist", lcm: { guidanse: 2 } }),
    /unknown distill config field "lcm\.guidanse"/,
  );
  assert.throws(
    () => resolveDistillConfig({ teacher: "mnist", lcm: { distance: "l1" } }),
    /lcm\.distance.*"huber" or "l2"/,
  );
  assert.throws(
    () => resolveDistillConfig({ teacher: "mnist", output: { sample_steps: 60 } }),
    /output\.sample_steps.*1 to lcm\.solver_steps \(50\)/,
  );
  await assert.rejects(
    distillRun(
      { config: { method: "reflow", teacher: join(teacherDir, "model") }, outDir: join(tmp, "r") },
      ctx(),
    ),
    /reflow needs a flow-matching teacher.*--method lcm/,
  );
  await assert.rejects(distillCli(["--method", "lcm"]), /--teacher is required/);
});

test("a student's provenance names a bundled teacher by its name and any other by its folder", () => {
  const c = resolveDistillConfig({ teacher: "mnist" });
  const made = { how: {}, sampling: { scheduler: "lcm", steps: 4, guidance: 1 } };
  const bundled = studentProvenance(c, join(assetsDir(), "models", "mnist"), 10, made);
  assert.equal((bundled["distilledFrom"] as { teacher: string }).teacher, "mnist");
  const elsewhere = studentProvenance(c, "/data/teachers/mnist", 10, made);
  assert.equal((elsewhere["distilledFrom"] as { teacher: string }).teacher, "/data/teachers/mnist");
});
