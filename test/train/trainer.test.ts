import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { readSafetensors } from "../../src/io/safetensors.ts";
import { loadPipeline } from "../../src/pipelines/pipeline-dir.ts";
import type { WorkerContext } from "../../src/runtime/worker.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import { Rng } from "../../src/tensor/rng.ts";
import { resolveConfig } from "../../src/train/config.ts";
import { drawBatch, type Objective } from "../../src/train/objective.ts";
import { type TrainEvent, trainRun } from "../../src/train/trainer.ts";
import { trainLogged } from "../support/train-run.ts";

const tmp = mkdtempSync(join(tmpdir(), "diffuse-train-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const tiny = {
  model: {
    _class_name: "UNet2DModel",
    sample_size: 32,
    in_channels: 1,
    out_channels: 1,
    block_out_channels: [8, 16],
    layers_per_block: 1,
    down_block_types: ["DownBlock2D", "AttnDownBlock2D"],
    up_block_types: ["AttnUpBlock2D", "UpBlock2D"],
    attention_head_dim: 8,
    norm_num_groups: 4,
    num_class_embeds: 11,
  },
  scheduler: { _class_name: "DDPMScheduler", num_train_timesteps: 1000, beta_schedule: "linear" },
  data: { dataset: "mnist", size: 32 },
  training: { steps: 6, batch_size: 8, lr: 1e-3, warmup_steps: 2, seed: 3, threads: 1 },
  output: { checkpoint_every: 3, sample_every: 0, log_every: 1, sample_steps: 2 },
};

function ctx(events: TrainEvent[] = []): WorkerContext<TrainEvent> {
  return { post: (e) => events.push(e), signal: new AbortController().signal };
}

function weights(dir: string): Map<string, Float32Array> {
  const t = readSafetensors(join(dir, "checkpoint", "unet", "diffusion_pytorch_model.safetensors")).tensors;
  return new Map([...t].map(([k, v]) => [k, v.data as Float32Array]));
}

test("a run stopped and resumed ends with the same weights as an uninterrupted run", async () => {
  const a = join(tmp, "a");
  const b = join(tmp, "b");
  const ev: TrainEvent[] = [];
  await trainRun({ config: tiny, outDir: a }, ctx(ev));
  assert.equal(ev.filter((e) => e.kind === "log").length, 6);
  const first = await trainRun({ config: tiny, outDir: b, stopAfter: 3 }, ctx());
  assert.equal(first.step, 3);
  const evB: TrainEvent[] = [];
  const second = await trainRun({ config: tiny, outDir: b }, ctx(evB));
  assert.equal(second.step, 6);
  const start = evB.find((e) => e.kind === "start");
  assert.ok(start && start.kind === "start" && start.resumed && start.step === 3);
  const wa = weights(a);
  const wb = weights(b);
  assert.equal(wa.size, wb.size);
  for (const [k, v] of wa) assert.deepEqual(wb.get(k), v, `weights of ${k} differ after resume`);
  // the metrics log has one line per step, none repeated
  const steps = readFileSync(join(b, "metrics.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => (JSON.parse(l) as { step: number }).step);
  assert.deepEqual(steps, [1, 2, 3, 4, 5, 6]);
  // the exported model loads as a pipeline
  const pipe = await loadPipeline(a);
  assert.equal(pipe.info.numClasses, 10);
  assert.ok(existsSync(join(a, "model", "scheduler", "scheduler_config.json")));
});

test("resuming with a different config is refused with a clear message", async () => {
  const c = join(tmp, "c");
  await trainRun({ config: { ...tiny, training: { ...tiny.training, steps: 3 } }, outDir: c }, ctx());
  const changed = { ...tiny, training: { ...tiny.training, lr: 5e-4 } };
  await assert.rejects(trainRun({ config: changed, outDir: c }, ctx()), /different config.*--out/);
});

test("a finished run asked for fewer steps is refused, its config.json left as it was; more steps extend it", async () => {
  const f = join(tmp, "f");
  const three = { ...tiny, training: { ...tiny.training, steps: 3 } };
  await trainRun({ config: three, outDir: f }, ctx());
  const saved = readFileSync(join(f, "config.json"), "utf8");
  const fewer = { ...tiny, training: { ...tiny.training, steps: 2 } };
  const events: TrainEvent[] = [];
  await assert.rejects(
    trainRun({ config: fewer, outDir: f }, ctx(events)),
    /has already trained 3 steps, more than training\.steps 2; to train it further pass --steps N with N > 3, or start over with --overwrite or a new --out folder/,
  );
  assert.equal(events.length, 0, "nothing starts");
  assert.equal(readFileSync(join(f, "config.json"), "utf8"), saved);
  const more = await trainRun(
    { config: { ...tiny, training: { ...tiny.training, steps: 4 } }, outDir: f },
    ctx(),
  );
  assert.equal(more.step, 4);
  assert.equal((JSON.parse(readFileSync(join(f, "config.json"), "utf8")) as typeof tiny).training.steps, 4);
});

test("a damaged checkpoint is reported, not loaded", async () => {
  const d = join(tmp, "d");
  await trainRun({ config: { ...tiny, training: { ...tiny.training, steps: 3 } }, outDir: d }, ctx());
  writeFileSync(join(d, "checkpoint", "optimizer.safetensors"), "garbage");
  await assert.rejects(trainRun({ config: tiny, outDir: d }, ctx()), /optimizer\.safetensors/);
});

test("config errors name the field and the allowed values", () => {
  assert.throws(
    () => resolveConfig({ ...tiny, training: { ...tiny.training, lr: -1 } }),
    /training\.lr.*\[0, 1\]/,
  );
  assert.throws(
    () => resolveConfig({ ...tiny, training: { ...tiny.training, bogus: 1 } }),
    /unknown config field "training\.bogus"/,
  );
  assert.throws(
    () => resolveConfig({ ...tiny, data: { dataset: "cifar" } }),
    /data\.dataset.*"mnist", "folder" or "emoji"/,
  );
  assert.throws(() => resolveConfig({ scheduler: {} }), /"model"/);
  assert.throws(
    () => resolveConfig({ ...tiny, training: { ...tiny.training, timestep_sampling: "lognormal" } }),
    /training\.timestep_sampling.*"uniform" or "logit-normal"/,
  );
  assert.throws(
    () => resolveConfig({ ...tiny, training: { ...tiny.training, logit_std: 0 } }),
    /training\.logit_std/,
  );
});

test("training.timestep_sampling decides the noise levels a batch is drawn at", () => {
  const base = {
    prediction: "v" as const,
    alphasCumprod: Float32Array.from({ length: 1000 }, (_, i) => 1 - (i + 1) / 1001),
    numTrainTimesteps: 1000,
    weighting: { kind: "uniform" as const },
    nullLabel: null,
    condDropout: 0,
  };
  const x0 = new HostTensor<"float32">(new Float32Array(4000 * 4), [4000, 1, 2, 2]);
  const middle = (timesteps: Objective["timesteps"]): number => {
    const t = drawBatch({ ...base, timesteps }, x0, null, new Rng(7))["t"]!.data as Float32Array;
    assert.ok(t.every((v) => Number.isInteger(v) && v >= 0 && v < 1000));
    return t.filter((v) => v >= 400 && v < 600).length / t.length;
  };
  // uniform: 20% of the timesteps in [400, 600); logit-normal(0, 1): P(|z| < logit(0.6)) = 31.6%
  assert.ok(Math.abs(middle({ kind: "uniform" }) - 0.2) < 0.03);
  assert.ok(Math.abs(middle({ kind: "logit-normal", mean: 0, std: 1 }) - 0.316) < 0.03);
  const cfg = resolveConfig({ ...tiny, training: { ...tiny.training, timestep_sampling: "logit-normal" } });
  assert.deepEqual(
    [cfg.training.timestep_sampling, cfg.training.logit_mean, cfg.training.logit_std],
    ["logit-normal", 0, 1],
  );
});

test("text-to-image configs: the three text sections together, with a text model; a missing VAE names the stage that makes it", async () => {
  const emoji = JSON.parse(
    readFileSync(join(import.meta.dirname, "../../configs/emoji.json"), "utf8"),
  ) as Record<string, unknown>;
  assert.doesNotThrow(() => resolveConfig(emoji));
  const { vae: _v, ...noVae } = emoji;
  assert.throws(() => resolveConfig(noVae), /text to image needs all of text_encoder, tokenizer, vae/);
  const { text_encoder: _t, tokenizer: _k, vae: _w, ...bare } = emoji;
  assert.throws(
    () => resolveConfig(bare),
    /a UNet2DConditionModel trains on text: the config needs "text_encoder"/,
  );
  assert.throws(
    () => resolveConfig({ ...tiny, text_encoder: emoji["text_encoder"], tokenizer: {}, vae: { path: "x" } }),
    /model\._class_name must be UNet2DConditionModel/,
  );
  assert.throws(
    () => resolveConfig({ ...emoji, tokenizer: { vocab_size: 10 } }),
    /tokenizer\.vocab_size.*≥ 300/,
  );
  const dir = mkdtempSync(join(tmpdir(), "diffuse-novae-"));
  try {
    await assert.rejects(
      trainLogged({ ...emoji, vae: { path: join(dir, "nope") } }, join(dir, "run")),
      /holds no trained VAE.*diffuse train --config configs\/emoji-vae\.json/,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
