/**
 * `diffuse distill --method reflow` (src/train/reflow.ts, reflow-pairs.ts, reflow-task.ts) on a tiny
 * class-conditional flow-matching DiT trained briefly on MNIST: the teacher's ODE pairs are
 * bit-identical from a seed (and cached, reused, refused when other settings ask for others); the
 * reflow loss — `diffuse train`'s flow-matching loss on the pairs — matches a hand computation on a
 * toy velocity network; a short reflow lowers the student's one-step error against the teacher's ODE
 * end points on fresh noise; a run stopped and resumed ends bit-identical to an uninterrupted one and
 * exports a flow-euler student; bad settings are refused naming the field and the fix.
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { run as distillCli } from "../../src/cli/distill.ts";
import { DataLoader } from "../../src/data/loader.ts";
import { classCondition } from "../../src/diffusion/conditioning.ts";
import { classifierFreeGuidance } from "../../src/diffusion/guidance.ts";
import { readSafetensors } from "../../src/io/safetensors.ts";
import { resolveDenoiser } from "../../src/models/registry.ts";
import { generate } from "../../src/pipelines/generate.ts";
import { samplingDefaults } from "../../src/pipelines/options.ts";
import { disposePipeline, type LoadedPipeline, loadPipeline } from "../../src/pipelines/pipeline-dir.ts";
import { compileGraph } from "../../src/runtime/compile.ts";
import type { WorkerContext } from "../../src/runtime/worker.ts";
import { Scheduler } from "../../src/samplers/scheduler.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import * as o from "../../src/tensor/ops.ts";
import { ParamScope } from "../../src/tensor/params.ts";
import { Rng } from "../../src/tensor/rng.ts";
import { Graph, type Tensor } from "../../src/tensor/symbolic.ts";
import { resolveDistillConfig } from "../../src/train/distill-config.ts";
import { type DistillEvent, distillRun } from "../../src/train/distill-trainer.ts";
import { batchSpecs, diffusionLoss, type Objective } from "../../src/train/objective.ts";
import {
  drawReflowBatch,
  type PairGeometry,
  type PairSet,
  pairDataset,
  reflowSigmaSampling,
  teacherPairs,
} from "../../src/train/reflow.ts";
import { loadOrMakePairs, type PairsManifest } from "../../src/train/reflow-pairs.ts";
import { trainRun } from "../../src/train/trainer.ts";
import { TINY_DIT } from "../support/tiny-models.ts";

const tmp = mkdtempSync(join(tmpdir(), "diffuse-reflow-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

function ctx(events: DistillEvent[] = []): WorkerContext<DistillEvent> {
  return { post: (e) => events.push(e), signal: new AbortController().signal };
}

const teacherDir = join(tmp, "teacher");
const GEO: PairGeometry = { channels: 1, size: 28, numClasses: 10, range: [-1, 1] };
let teacher: LoadedPipeline;

// a tiny class-conditional flow-matching DiT (patch 4: 49 tokens), trained briefly on MNIST 28×28
before(async () => {
  await trainRun(
    {
      config: {
        model: {
          _class_name: "DiTTransformer2DModel",
          sample_size: 28,
          in_channels: 1,
          out_channels: 1,
          patch_size: 4,
          num_attention_heads: 2,
          attention_head_dim: 16,
          num_layers: 2,
          num_embeds_ada_norm: 10,
        },
        scheduler: { _class_name: "FlowMatchEulerDiscreteScheduler", num_train_timesteps: 1000, shift: 1 },
        data: { dataset: "mnist", size: 28 },
        training: {
          steps: 120,
          batch_size: 32,
          lr: 3e-3,
          warmup_steps: 10,
          ema_decay: 0.9,
          seed: 1,
          threads: 2,
        },
        output: { checkpoint_every: 1000, sample_every: 0, log_every: 60, sample_steps: 4 },
      },
      outDir: teacherDir,
    },
    { post: () => {}, signal: new AbortController().signal },
  );
  teacher = await loadPipeline(teacherDir);
});
after(() => teacher && disposePipeline(teacher));

const reflowConfig = (over: { steps?: number; lr?: number; reflow?: Record<string, unknown> } = {}) => ({
  method: "reflow",
  teacher: join(teacherDir, "model"),
  reflow: { pairs: 48, teacher_steps: 6, guidance: 2, seed: 3, ...over.reflow },
  training: {
    steps: over.steps ?? 4,
    batch_size: 16,
    lr: over.lr ?? 1e-3,
    warmup_steps: 0,
    seed: 2,
    threads: 2,
  },
  output: { checkpoint_every: 1000, sample_every: 0, log_every: 1 },
});

const settings = (seed: number) => ({ teacherSteps: 6, guidance: 2, seed });
const pairsOf = (seed: number, from: number, to: number) =>
  teacherPairs(teacher.denoiser, teacher.schedulerConfig, settings(seed), GEO, from, to);

test("reflow pairs are bit-identical from a seed, differ for another, and are cached, reused and guarded", async () => {
  const a = await pairsOf(3, 0, 12);
  const b = await pairsOf(3, 0, 12);
  assert.deepEqual(a.z.data, b.z.data);
  assert.deepEqual(a.x.data, b.x.data, "same seed, same teacher: the same end points, bit for bit");
  assert.deepEqual(
    Array.from(a.labels!.data, Number),
    Array.from({ length: 12 }, (_, i) => i % 10),
  );
  assert.ok(
    a.x.data.every((v) => v >= -1 && v <= 1),
    "x is clamped to the image range",
  );
  const c = await pairsOf(4, 0, 12);
  assert.notDeepEqual(c.z.data, a.z.data);
  assert.notDeepEqual(c.x.data, a.x.data);
  // a pair's noise depends on its index alone, not on the block it is made in
  const tail = await pairsOf(3, 6, 12);
  assert.deepEqual(tail.z.data, a.z.data.subarray(6 * 784));

  const dir = join(tmp, "pairs");
  const manifest = (seed: number, count = 12): PairsManifest => ({
    format: 1,
    teacher: "tiny",
    teacherWeights: "w",
    teacherConfig: {},
    teacherScheduler: teacher.schedulerConfig,
    teacherSteps: 6,
    guidance: 2,
    seed,
    count,
    chunk: 4,
    shape: [1, 28, 28],
    numClasses: 10,
    range: [-1, 1],
  });
  let made: number[] = [];
  const progress = { onProgress: (p: { made: number }) => made.push(p.made) };
  const make = (seed: number) => (from: number, to: number) => pairsOf(seed, from, to);
  const first = await loadOrMakePairs(dir, manifest(3), make(3), progress);
  assert.deepEqual(made, [4, 8, 12], "made in chunks, with progress");
  assert.deepEqual(first.z, a.z.data);
  assert.deepEqual(Array.from(first.labels!), Array.from(a.labels!.data, Number));
  assert.ok(existsSync(join(dir, "chunk-000002.safetensors")));
  made = [];
  const again = await loadOrMakePairs(dir, manifest(3), make(3), progress);
  assert.deepEqual(made, [0, 0, 0], "the second run reads the cache");
  assert.deepEqual(again.x, first.x);
  await assert.rejects(
    loadOrMakePairs(dir, manifest(4), make(4)),
    /other settings \(reflow\.seed 3 → 4\).*--overwrite/,
  );
  // started over with fewer pairs: the chunks are kept, those past the end dropped
  made = [];
  const fewer = await loadOrMakePairs(dir, manifest(3, 8), make(3), { ...progress, regenerate: true });
  assert.deepEqual(made, [0, 0]);
  assert.deepEqual(fewer.x, first.x.subarray(0, 8 * 784));
  assert.ok(!existsSync(join(dir, "chunk-000002.safetensors")));
  // started over with another seed: made again
  const redone = await loadOrMakePairs(dir, manifest(4), make(4), { regenerate: true });
  assert.deepEqual(redone.z, c.z.data);
  assert.notDeepEqual(redone.x, first.x);
});

// a toy velocity network v(x, t, y) = θ·x + 0.001·t + 0.2·y for the loss, on a real model's conditioning
const B = 4;
const SIDE = 2;
const PER = SIDE * SIDE;
const toyV = (theta: number, x: number, t: number, y: number) => theta * x + 0.001 * t + 0.2 * y;

async function toyLoss(feeds: Record<string, HostTensor>, theta: number): Promise<number> {
  const g = new Graph();
  const bound = resolveDenoiser(TINY_DIT); // 3 classes, null label 3
  const th = g.input("theta", []);
  const toy = {
    ...bound,
    forward: (_s: ParamScope, x: Tensor, t: Tensor, cond: Readonly<Record<string, Tensor | undefined>>) => {
      const n = x.shape[0]!;
      const y = o.reshape(o.cast(cond["class_labels"]!, "float32"), [n, 1, 1, 1]);
      return o.add(o.add(o.mul(th, x), o.mul(o.reshape(t, [n, 1, 1, 1]), 0.001)), o.mul(y, 0.2));
    },
  };
  const b: Record<string, Tensor> = {};
  for (const [k, s] of Object.entries(batchSpecs(toy, B, SIDE)))
    b[k] = g.input(k, s.shape, s.dtype ?? "float32");
  const loss = diffusionLoss(toy)(ParamScope.root(g), b) as Tensor;
  const compiled = await compileGraph(g, { loss });
  try {
    const out = await compiled.run({ ...feeds, theta: HostTensor.scalar(theta) });
    return out["loss"]!.data[0] as number;
  } finally {
    compiled.dispose();
  }
}

test("the reflow loss is the flow-matching loss on the pairs: ‖v(x_σ, σT, y) − (z − x)‖² by hand, σ = 1 in the one-step stage", async () => {
  const rng = new Rng(5);
  const count = 8;
  const set: PairSet = {
    count,
    shape: [1, SIDE, SIDE],
    z: rng.normal(count * PER),
    x: rng.uniform(count * PER, -1, 1),
    labels: Int32Array.from({ length: count }, (_, i) => i % 3),
  };
  const obj: Objective = {
    prediction: "flow",
    alphasCumprod: null,
    numTrainTimesteps: 1000,
    weighting: { kind: "uniform" },
    timesteps: { kind: "uniform" },
    flowShift: 1,
    nullLabel: 3,
    condDropout: 0,
  };
  const loader = new DataLoader(pairDataset(set), { batchSize: B, rng: 9 });
  for (const oneStep of [false, true]) {
    const feeds = drawReflowBatch(obj, set, loader, 3, new Rng(11), oneStep);
    const idx = loader.batchAt(1, 1).indices; // step 3 = epoch 1, batch 1 (two batches per epoch)
    const sig = Array.from(feeds["s"]!.data as Float32Array);
    if (oneStep) assert.deepEqual(sig, [1, 1, 1, 1]);
    else assert.ok(sig.every((s) => s > 0 && s < 1) && new Set(sig).size === B, `σ drawn per sample: ${sig}`);
    const theta = 0.3;
    let want = 0;
    for (let i = 0; i < B; i++) {
      const p = idx[i]!;
      assert.equal(
        Number(feeds["cond.class_labels"]!.data[i]),
        set.labels![p],
        "conditioned on the pair's label",
      );
      for (let j = 0; j < PER; j++) {
        const x = set.x[p * PER + j]!;
        const z = set.z[p * PER + j]!;
        assert.equal(feeds["noise"]!.data[i * PER + j], z, "the noise is the pair's z");
        const s = sig[i]!;
        const xs = (1 - s) * x + s * z;
        const d = toyV(theta, xs, 1000 * s, set.labels![p]!) - (z - x);
        want += d * d;
      }
    }
    want /= B * PER;
    const got = await toyLoss(feeds, theta);
    assert.ok(
      Math.abs(got - want) <= 1e-5 * want,
      `${oneStep ? "σ = 1" : "σ ~ U"}: loss ${got} vs ${want} by hand`,
    );
  }
});

/** Mean squared distance between a model's one Euler step from z (guidance 1) and the teacher's ODE end points x. */
async function oneStepError(
  model: LoadedPipeline,
  z: HostTensor<"float32">,
  x: Float32Array,
  labels: number[],
) {
  const net = classifierFreeGuidance(
    (xt, t, c) => model.denoiser.denoise(xt as HostTensor<"float32">, t, c),
    classCondition(labels),
    classCondition(labels),
    1,
  );
  const out = await Scheduler.fromConfig(model.schedulerConfig).sample(net, z, { steps: 1 });
  let s = 0;
  for (let i = 0; i < x.length; i++) s += (Math.min(1, Math.max(-1, out.data[i]!)) - x[i]!) ** 2;
  return s / x.length;
}

test("a short reflow brings the one-step student closer to the teacher's ODE end points on fresh noise", async (t) => {
  const held = await pairsOf(99, 0, 40); // noise the student never trains on
  const labels = Array.from(held.labels!.data, Number);
  const before = await oneStepError(teacher, held.z, held.x.data, labels); // step 0: the student is the teacher
  const dir = join(tmp, "learn");
  const events: DistillEvent[] = [];
  await distillRun(
    {
      config: reflowConfig({ steps: 80, lr: 1e-3, reflow: { pairs: 160, ema_decay: 0.9 } }),
      outDir: dir,
    },
    ctx(events),
  );
  const student = await loadPipeline(dir);
  const afterErr = await oneStepError(student, held.z, held.x.data, labels);
  disposePipeline(student);
  t.diagnostic(
    `one-step error vs the teacher's 6-step guided ODE: ${before.toFixed(4)} → ${afterErr.toFixed(4)}`,
  );
  assert.ok(
    afterErr < 0.7 * before,
    `one-step error on held-out noise: ${afterErr.toFixed(4)} after 80 steps, ${before.toFixed(4)} before`,
  );
  const pairs = events.filter((e) => e.kind === "pairs");
  assert.deepEqual(
    pairs.map((e) => (e.kind === "pairs" ? [e.done, e.made] : [])),
    [
      [100, 100],
      [160, 160],
    ],
    "pairs made in chunks, with progress",
  );
});

test("a reflow stopped and resumed ends bit-identical to an uninterrupted one, reusing its pairs; the student samples with flow-euler", async () => {
  const a = join(tmp, "a");
  const b = join(tmp, "b");
  await distillRun({ config: reflowConfig(), outDir: a }, ctx());
  const first = await distillRun({ config: reflowConfig(), outDir: b, stopAfter: 2 }, ctx());
  assert.equal(first.step, 2);
  const evB: DistillEvent[] = [];
  const second = await distillRun({ config: reflowConfig(), outDir: b }, ctx(evB));
  assert.equal(second.step, 4);
  const start = evB.find((e) => e.kind === "start");
  assert.ok(start?.kind === "start" && start.resumed && start.step === 2);
  assert.ok(
    evB.every((e) => e.kind !== "pairs" || e.made === 0),
    "the resumed run reads its pairs",
  );
  for (const part of ["transformer", "transformer_ema"]) {
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
  // other pairs are refused (naming the setting); other training settings too
  await assert.rejects(
    distillRun({ config: reflowConfig({ reflow: { guidance: 3 } }), outDir: b }, ctx()),
    /reflow pairs .* other settings \(reflow\.guidance 2 → 3\).*--overwrite/,
  );
  await assert.rejects(
    distillRun({ config: reflowConfig({ lr: 5e-4 }), outDir: b }, ctx()),
    /different config/,
  );

  const pipe = await loadPipeline(a);
  try {
    assert.equal(pipe.schedulerConfig["_class_name"], "FlowMatchEulerDiscreteScheduler");
    assert.equal(pipe.schedulerConfig["stochastic_sampling"], false);
    const index = JSON.parse(readFileSync(join(a, "model", "model_index.json"), "utf8")) as Record<
      string,
      unknown
    >;
    assert.equal(index["_class_name"], "DiTPipeline");
    const d = samplingDefaults(pipe);
    assert.deepEqual([d.scheduler, d.steps, d.guidance], ["flow-euler", 1, 1]);
    const info = pipe.info["distilledFrom"] as { method: string; guidance: number; pairs: number };
    assert.deepEqual([info.method, info.guidance, info.pairs], ["reflow", 2, 48]);
    for (const steps of [1, 2, 4]) {
      const sched = Scheduler.fromConfig(pipe.schedulerConfig);
      const img = await generate(pipe.denoiser, sched, { labels: [3, 7], steps, guidance: 1, seed: 0 });
      assert.deepEqual(img.shape, [2, 1, 28, 28]);
      assert.ok(img.data.every((v) => Number.isFinite(v)));
    }
  } finally {
    disposePipeline(pipe);
  }
});

test("reflow settings are checked: errors name the field and the fix", async () => {
  const cfg = (reflow: Record<string, unknown>, training: Record<string, unknown> = {}) => ({
    method: "reflow",
    teacher: "mnist-dit",
    reflow,
    training,
  });
  assert.equal(
    resolveDistillConfig(cfg({})).output.sample_steps,
    1,
    "a reflow student previews and exports 1 step",
  );
  assert.throws(
    () => resolveDistillConfig(cfg({ pairs: 10 })),
    /"reflow\.pairs" must be .*training\.batch_size \(64\)/,
  );
  assert.throws(
    () => resolveDistillConfig(cfg({ teacher_steps: 0 })),
    /"reflow\.teacher_steps" must be an integer from 1/,
  );
  assert.throws(
    () => resolveDistillConfig(cfg({ sigma_sampling: "lognormal" })),
    /"reflow\.sigma_sampling" must be "uniform", "logit-normal" or "teacher"/,
  );
  assert.throws(
    () => resolveDistillConfig(cfg({ one_step_from: 2000 })),
    /"reflow\.one_step_from" must be null \(never\), or .*below training\.steps \(2000\)/,
  );
  assert.throws(
    () => resolveDistillConfig(cfg({ guidance: -1 })),
    /"reflow\.guidance" must be a number from 0 to 50/,
  );
  assert.throws(
    () => resolveDistillConfig(cfg({ pair: 100 })),
    /unknown distill config field "reflow\.pair"/,
  );
  assert.throws(
    () => reflowSigmaSampling({ sigmaSampling: "teacher", logitMean: 0, logitStd: 1 }, {}),
    /does not say how it drew its times.*set reflow\.sigma_sampling to "uniform" or "logit-normal"/,
  );
  assert.deepEqual(
    reflowSigmaSampling(
      { sigmaSampling: "teacher", logitMean: 0, logitStd: 1 },
      { training: { training: { timestep_sampling: "logit-normal", logit_mean: 0.5, logit_std: 2 } } },
    ),
    { timestep_sampling: "logit-normal", logit_mean: 0.5, logit_std: 2 },
  );
  // an ε-prediction teacher is for LCM
  await assert.rejects(
    distillRun({ config: { method: "reflow", teacher: "mnist" }, outDir: join(tmp, "not-flow") }, ctx()),
    /reflow needs a flow-matching teacher.*DDPMScheduler: distil it with --method lcm/,
  );
  await assert.rejects(distillCli(["--teacher", "mnist", "--pairs", "100"]), /--pairs is a reflow setting/);
});
