/**
 * LCM-LoRA (`diffuse distill` with a `lora` section; src/train/lcm-lora.ts): the student is the
 * teacher's frozen weights plus trained adapters. At step 0 its loss is the full student's; with any
 * adapters its loss is the full loss of the fused weights (the teacher without them, student and
 * target with them); a step moves the adapters alone. A short run brings the one-step student closer
 * to the teacher's ODE; a stopped and resumed run ends bit-identical; the exported LoRA file loads
 * into the teacher with every key mapped, and the teacher with it samples what the fused model/
 * samples (`diffuse sample --lora … --scheduler lcm`), for a pixel and a text-to-image teacher.
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { run as distillCli } from "../../src/cli/distill.ts";
import { run as sampleCli } from "../../src/cli/sample.ts";
import { readSafetensors } from "../../src/io/safetensors.ts";
import { loadLoraWeights, readLoraFile } from "../../src/models/lora/index.ts";
import { generate } from "../../src/pipelines/generate.ts";
import { samplingDefaults } from "../../src/pipelines/options.ts";
import { disposePipeline, loadPipeline } from "../../src/pipelines/pipeline-dir.ts";
import { schedulerFor } from "../../src/pipelines/scheduler-names.ts";
import { latentDecoder, promptConditions } from "../../src/pipelines/text-to-image.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import type { Params } from "../../src/tensor/params.ts";
import { Rng } from "../../src/tensor/rng.ts";
import { checkpointView, resolveDistillConfig } from "../../src/train/distill-config.ts";
import { distillRun, teacherPlan } from "../../src/train/distill-trainer.ts";
import { lcmBatchSpecs, lcmFeeds } from "../../src/train/lcm.ts";
import { fusedWeights, LCM_LORA_TARGETS } from "../../src/train/lcm-lora.ts";
import { lcmLoss, targetFeeds } from "../../src/train/lcm-loss.ts";
import { lcmStudent } from "../../src/train/lcm-student.ts";
import { adapterLayers } from "../../src/train/lora-component.ts";
import { compileTrainStep } from "../../src/train/train-step.ts";
import type { TrainEvent } from "../../src/train/trainer.ts";
import { makeCaptionShapes } from "../support/caption-shapes.ts";
import { quietly } from "../support/quiet.ts";
import { eventSink as ctx, oneStepError, trainTinyMnistTeacher } from "../support/tiny-mnist-teacher.ts";
import { makeTinySd, TINY_SD_CAPTIONS } from "../support/tiny-sd.ts";

const tmp = mkdtempSync(join(tmpdir(), "diffuse-lcm-lora-"));
after(() => rmSync(tmp, { recursive: true, force: true }));
let teacherDir: string;
before(async () => {
  teacherDir = await trainTinyMnistTeacher(join(tmp, "teacher"));
});

interface Over {
  steps?: number;
  lr?: number;
  solverSteps?: number;
  rank?: number;
  target?: "ema" | "online";
}

const config = (over: Over = {}) => ({
  method: "lcm",
  teacher: teacherDir,
  lcm: {
    solver_steps: over.solverSteps ?? 10,
    guidance: 1.5,
    target: over.target ?? "online",
    ema_decay: 0.9,
  },
  lora: { rank: over.rank ?? 4 },
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

const isAdapter = (k: string) => /\.lora_[AB]\.default\.weight$/.test(k);
const copy = (p: ReadonlyMap<string, HostTensor<"float32">>): Params =>
  new Map([...p].map(([k, v]) => [k, v.clone()]));
const close = (a: number, b: number, rel: number) =>
  Math.abs(a - b) <= rel * Math.max(Math.abs(a), Math.abs(b));

test("the LoRA student's loss is the full student's of the fused weights (the teacher without adapters); a step moves the adapters alone", async () => {
  const teacher = await loadPipeline(teacherDir);
  try {
    const c = resolveDistillConfig(config());
    const { plan } = teacherPlan(teacher, c);
    const base = teacher.denoiser.params;
    const bytes = new Map([...base].map(([k, v]) => [k, v.data.slice()]));
    const n = 8;
    const rng = new Rng(11);
    const x0 = new HostTensor<"float32">(rng.uniform(n * 28 * 28, -1, 1), [n, 1, 28, 28]);
    const noise = new HostTensor<"float32">(rng.normal(n * 28 * 28), [n, 1, 28, 28]);
    const feeds = lcmFeeds(plan, x0, noise, [0, 3, 5, 9, 1, 2, 7, 8], [0, 1, 2, 3, 4, 5, 6, 7]);
    const specs = lcmBatchSpecs(plan, n, 28);
    const session = { threads: 2 };
    const view = checkpointView(c, plan.model.config, teacher.schedulerConfig, 28, 1);
    const student = lcmStudent(c, plan, teacher, view, tmp);
    const tr = student.train;
    const step = await compileTrainStep(tr.loss, specs, {
      frozen: tr.frozen!,
      lora: tr.lora!,
      frozenAs: "inputs",
      session,
    });
    const full = await compileTrainStep(lcmLoss(plan, base), specs, { session });
    try {
      // only the adapters are parameters: A and B of every targeted layer
      const layers = step.specs.filter((s) => s.name.includes(".lora_A."));
      assert.ok(step.specs.every((s) => isAdapter(s.name)) && layers.length * 2 === step.specs.length);
      assert.ok(layers.some((s) => s.name.startsWith("down_blocks.0.resnets.0.conv1.")));
      assert.ok(layers.some((s) => s.name.endsWith("attentions.0.to_q.lora_A.default.weight")));
      // step 0 (B = 0): the student and the target are the teacher
      const st = step.initState(copy(tr.initial));
      const fs = full.initState(copy(base));
      const lora0 = (await step.step(st, { ...feeds, ...student.stateFeeds(st) }, 0, 0)).loss;
      const full0 = (await full.step(fs, { ...feeds, ...targetFeeds(fs.params) }, 0, 0)).loss;
      assert.ok(close(lora0, full0, 1e-5), `LoRA loss at init ${lora0}, the full student's ${full0}`);
      // any adapters: the full loss with the fused weights as student and target, the teacher as it is
      const r = new Rng(3);
      for (const [k, v] of st.params) st.params.set(k, new HostTensor(r.normal(v.size, 0, 0.2), v.shape));
      const fused = fusedWeights(
        base,
        adapterLayers(
          step.specs
            .filter((s) => s.name.includes(".lora_A."))
            .map((s) => s.name.replace(/\.lora_A\.default\.weight$/, "")),
          st.params,
          c.lora!.rank,
        ),
      );
      const fusedState = full.initState(copy(fused));
      const lora1 = (await step.step(st, { ...feeds, ...student.stateFeeds(st) }, 0, 0)).loss;
      const full1 = (await full.step(fusedState, { ...feeds, ...targetFeeds(fused) }, 0, 0)).loss;
      assert.ok(close(lora1, full1, 1e-4), `LoRA loss ${lora1}, the fused full student's ${full1}`);
      assert.ok(!close(lora1, lora0, 1e-2), `the adapters change the loss: ${lora0} → ${lora1}`);
      // a step: the adapters move, the base stays bit for bit
      const before = copy(st.params);
      await step.step(st, { ...feeds, ...student.stateFeeds(st) }, 1e-2, 0);
      assert.deepEqual([...st.params.keys()].sort(), [...before.keys()].sort());
      assert.ok([...st.params].every(([k, v]) => v.data.some((x, i) => x !== before.get(k)!.data[i])));
      for (const [k, v] of base) assert.deepEqual(v.data, bytes.get(k), `${k} changed`);
    } finally {
      step.dispose();
      full.dispose();
    }
  } finally {
    disposePipeline(teacher);
  }
});

test("a short LCM-LoRA distillation brings the one-step student closer to the teacher's ODE", async (t) => {
  const events: TrainEvent[] = [];
  const dir = join(tmp, "learn");
  const steps = 40;
  const cfg = config({ steps, lr: 1e-2, rank: 8, target: "ema" });
  await distillRun({ config: cfg, outDir: dir }, ctx(events));
  const teacher = await loadPipeline(teacherDir);
  const student = await loadPipeline(dir);
  try {
    // at step 0 the student is the teacher (B = 0), and one LCM step from t = 999 is the same on any grid
    const beforeErr = await oneStepError(teacher, teacher);
    const afterErr = await oneStepError(student, teacher);
    const losses = events.flatMap((e) => (e.kind === "log" ? [e.loss] : []));
    const mean = (a: number[]) => a.reduce((p, q) => p + q, 0) / a.length;
    const [first, last] = [mean(losses.slice(0, 10)), mean(losses.slice(-10))];
    t.diagnostic(`one-step error vs the teacher's ODE: ${beforeErr.toFixed(4)} → ${afterErr.toFixed(4)}`);
    t.diagnostic(
      `consistency loss, first and last 10 steps: ${first.toExponential(3)} → ${last.toExponential(3)}`,
    );
    assert.ok(
      afterErr < 0.75 * beforeErr,
      `one-step error vs the teacher's 10-step DDIM: ${afterErr.toFixed(4)} after ${steps} steps, ${beforeErr.toFixed(4)} before`,
    );
    assert.ok(last < first, "the consistency loss falls");
  } finally {
    for (const p of [teacher, student]) disposePipeline(p);
  }
});

/** The checkpoint's adapter tensors of a run, raw and EMA. */
const adapterCheckpoint = (dir: string) =>
  ["unet_lora", "unet_lora_ema"].map(
    (part) => readSafetensors(join(dir, "checkpoint", part, "adapter.safetensors")).tensors,
  );

test("an LCM-LoRA run resumes bit-identically; its LoRA file loads into the teacher with every key mapped and samples as the fused model/", async () => {
  // solver_steps 50: the grid `--scheduler lcm` samples on (LCMScheduler's original_inference_steps)
  const cfg = config({ solverSteps: 50 });
  const a = join(tmp, "a");
  const b = join(tmp, "b");
  await distillRun({ config: cfg, outDir: a }, ctx());
  assert.equal((await distillRun({ config: cfg, outDir: b, stopAfter: 2 }, ctx())).step, 2);
  const evB: TrainEvent[] = [];
  assert.equal((await distillRun({ config: cfg, outDir: b }, ctx(evB))).step, 4);
  const start = evB.find((e) => e.kind === "start");
  assert.ok(start?.kind === "start" && start.resumed && start.step === 2);
  const [ca, cb] = [adapterCheckpoint(a), adapterCheckpoint(b)];
  for (const [i, part] of ca.entries()) {
    assert.ok(part.size > 0 && part.size === cb[i]!.size);
    for (const [k, v] of part) assert.deepEqual(cb[i]!.get(k)!.data, v.data, `${k} differs after resume`);
  }
  assert.ok(!existsSync(join(a, "checkpoint", "unet")), "the checkpoint holds the adapters, not the U-Net");
  // a different rank is a different run
  await assert.rejects(
    distillRun({ config: config({ solverSteps: 50, rank: 2 }), outDir: b }, ctx()),
    /different config/,
  );

  // the LoRA file: diffusers' names, every key maps onto the teacher
  const loraPath = join(a, "pytorch_lora_weights.safetensors");
  const file = readLoraFile(loraPath);
  const layers = file.components.get("unet")!;
  assert.equal(file.dialect, "diffusers");
  assert.deepEqual([...file.components.keys()], ["unet"]);
  assert.ok(
    [...layers.keys()].every((l) => LCM_LORA_TARGETS["UNet2DModel"]!.some((t) => l.endsWith(`.${t}`))),
  );
  const teacher = await loadPipeline(teacherDir);
  const model = await loadPipeline(a);
  try {
    const report = await loadLoraWeights(teacher, loraPath);
    assert.deepEqual(report.unmapped, []);
    assert.equal(report.layers["unet"], layers.size);
    // model/: the teacher with the adapters fused in, an LCM student's folder
    assert.equal(model.schedulerConfig["_class_name"], "LCMScheduler");
    const d = samplingDefaults(model);
    assert.deepEqual([d.scheduler, d.steps, d.guidance], ["lcm", 4, 1]);
    const from = model.info["distilledFrom"] as Record<string, unknown>;
    assert.deepEqual([from["method"], from["rank"], from["teacher"]], ["lcm-lora", 4, teacherDir]);
    const lcm = schedulerFor({ name: "lcm" }, model.schedulerConfig);
    const opts = { labels: [0, 3, 7, 9], steps: 4, guidance: 1, seed: 1 };
    const fused = await generate(model.denoiser, lcm, opts);
    const unfused = await generate(teacher.denoiser, lcm, opts);
    const err = Math.max(...fused.data.map((v, i) => Math.abs(v - unfused.data[i]!)));
    assert.ok(err < 1e-4, `fused vs teacher + LoRA: max |Δ| ${err}`);
  } finally {
    disposePipeline(teacher);
    disposePipeline(model);
  }
  // the same through the CLI: --model OUT/model against --model TEACHER --lora FILE --scheduler lcm
  const common = ["--labels", "0,3,7,9", "--steps", "4", "--guidance", "1", "--seed", "1"];
  await quietly(() => sampleCli(["--model", join(a, "model"), ...common, "--out", join(tmp, "s1")]));
  await quietly(() =>
    sampleCli([
      ...["--model", teacherDir, "--lora", loraPath, "--scheduler", "lcm"],
      ...[...common, "--out", join(tmp, "s2")],
    ]),
  );
  const [s1, s2] = ["s1", "s2"].map((s) => readSafetensors(join(tmp, s, "samples.safetensors")).tensors);
  const [i1, i2] = [s1!.get("images")!.data as Float32Array, s2!.get("images")!.data as Float32Array];
  assert.equal(i1.length, 4 * 28 * 28);
  const cliErr = Math.max(...i1.map((v, i) => Math.abs(v - i2[i]!)));
  assert.ok(cliErr < 1e-4, `the CLI's fused and unfused samples agree: max |Δ| ${cliErr}`);
});

test("LCM-LoRA of a text-to-image teacher: a StableDiffusionPipeline student that resumes bit-identically and equals the teacher with its LoRA file", async () => {
  const sd = await makeTinySd();
  const root = join(sd, "..");
  const images = makeCaptionShapes(join(root, "shapes"));
  const cfg = {
    method: "lcm",
    teacher: sd,
    lcm: { solver_steps: 10, guidance: 3, distance: "l2" },
    lora: { rank: 2, alpha: 4 },
    data: { dataset: "folder", path: images, size: 16 },
    training: { steps: 4, batch_size: 6, lr: 1e-2, warmup_steps: 0, seed: 3, threads: 2 },
    output: { checkpoint_every: 1000, sample_every: 4, log_every: 1, sample_steps: 2 },
  };
  try {
    const [a, b] = [join(root, "a"), join(root, "b")];
    await distillRun({ config: cfg, outDir: a }, ctx());
    assert.equal((await distillRun({ config: cfg, outDir: b, stopAfter: 2 }, ctx())).step, 2);
    assert.equal((await distillRun({ config: cfg, outDir: b }, ctx())).step, 4);
    const [ca, cb] = [adapterCheckpoint(a), adapterCheckpoint(b)];
    for (const [i, part] of ca.entries())
      for (const [k, v] of part) assert.deepEqual(cb[i]!.get(k)!.data, v.data, `${k} differs after resume`);
    assert.ok(existsSync(join(a, "samples", "step-000004.png")), "a preview grid is written");
    const index = JSON.parse(readFileSync(join(a, "model", "model_index.json"), "utf8")) as Record<
      string,
      unknown
    >;
    assert.equal(index["_class_name"], "StableDiffusionPipeline");
    assert.deepEqual(index["scheduler"], ["diffusers", "LCMScheduler"]);

    const teacher = await loadPipeline(sd);
    const student = await loadPipeline(a);
    try {
      const loraPath = join(a, "pytorch_lora_weights.safetensors");
      const report = await loadLoraWeights(teacher, loraPath);
      const file = readLoraFile(loraPath);
      assert.deepEqual(report.unmapped, []);
      assert.equal(report.layers["unet"], file.components.get("unet")!.size);
      assert.equal(JSON.parse(file.metadata["lora_adapter_metadata"]!)["unet.lora_alpha"], 4);
      const from = student.info["distilledFrom"] as Record<string, unknown>;
      assert.deepEqual([from["method"], from["rank"], from["alpha"]], ["lcm-lora", 2, 4]);
      const lcm = schedulerFor({ name: "lcm" }, student.schedulerConfig);
      const conditions = await promptConditions(teacher.text!, TINY_SD_CAPTIONS.slice(0, 3));
      const opts = { conditions, steps: 4, guidance: 1, seed: 0, size: 8 };
      const fused = await generate(student.denoiser, lcm, { ...opts, decode: latentDecoder(student.vae!) });
      const unfused = await generate(teacher.denoiser, lcm, { ...opts, decode: latentDecoder(teacher.vae!) });
      assert.deepEqual(fused.shape, [3, 3, 16, 16]);
      const err = Math.max(...fused.data.map((v, i) => Math.abs(v - unfused.data[i]!)));
      assert.ok(err < 1e-4, `fused vs teacher + LoRA: max |Δ| ${err}`);
    } finally {
      disposePipeline(teacher);
      disposePipeline(student);
    }
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test("LCM-LoRA config errors name the field", async () => {
  const base = { teacher: "mnist" };
  const bad: [Record<string, unknown>, RegExp][] = [
    [{ lora: { rank: 0 } }, /"lora\.rank" must be an integer ≥ 1/],
    [{ lora: { rank: 4, alpha: -1 } }, /"lora\.alpha" must be a positive number or null/],
    [{ lora: { targets: [] } }, /"lora\.targets" must be a list of layer names/],
    [{ lora: { targets: "to_(q" } }, /"lora\.targets".*not a regular expression/],
    [{ lora: { ranks: 4 } }, /unknown distill config field "lora\.ranks"/],
    [{ lora: 8 }, /"lora" must be an object/],
    [
      { method: "reflow", teacher: "mnist-dit", lora: { rank: 4 } },
      /"lora" must be null for method "reflow"/,
    ],
  ];
  for (const [over, re] of bad) assert.throws(() => resolveDistillConfig({ ...base, ...over }), re);
  assert.equal(resolveDistillConfig({ ...base, lora: null }).lora, null);
  assert.deepEqual(resolveDistillConfig({ ...base, lora: {} }).lora, {
    rank: 64,
    alpha: null,
    targets: null,
  });
  await assert.rejects(
    distillRun(
      { config: { ...config(), lora: { targets: ["nothing_here"] } }, outDir: join(tmp, "e1") },
      ctx(),
    ),
    /lora\.targets \["nothing_here"\] match no linear or convolution layer/,
  );
  await assert.rejects(distillCli(["--teacher", "mnist", "--lora-rank", "0"]), /--lora-rank/);
});
