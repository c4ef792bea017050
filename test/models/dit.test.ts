/**
 * DiTTransformer2DModel against diffusers: the dit fixture (a tiny diffusers v0.40 checkpoint with its
 * inputs, outputs and intermediates), parameter names and order, DiT's initialization (a fresh model
 * outputs zero), the save/load round trip, and the errors of bad configs and inputs.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { readSafetensors } from "../../src/io/safetensors.ts";
import { DiTTransformer2DModel, positionEmbedding } from "../../src/models/dit/index.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import { Rng } from "../../src/tensor/rng.ts";
import { maxRel } from "../support/allclose.ts";

const FIX = "test/fixtures/dit";
const MODEL = join(FIX, "model");
const tmp = mkdtempSync(join(tmpdir(), "diffuse-dit-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const fixtureModel = DiTTransformer2DModel.fromPretrained(MODEL);
const inputs = readSafetensors(join(FIX, "inputs.safetensors")).tensors;

test("dit: reproduces diffusers within 1e-4 (learned sigma: 8 output channels)", async (t) => {
  const dit = await fixtureModel;
  const outputs = readSafetensors(join(FIX, "outputs.safetensors")).tensors;
  const x = inputs.get("call0.hidden_states") as HostTensor<"float32">;
  const y = await dit.forward(x, inputs.get("call0.timestep")!, {
    classLabels: inputs.get("call0.class_labels")!,
  });
  const ref = outputs.get("call0.sample")!;
  assert.deepEqual(y.shape, ref.shape);
  const rel = maxRel(y.data, ref.data as Float32Array);
  t.diagnostic(`max|a−b|/max|ref| = ${rel.toExponential(2)}`);
  assert.ok(rel <= 1e-4, `relative error ${rel}`);
});

test("dit: the 2-D sincos position embedding matches diffusers' (patch embedding + positions)", async () => {
  const inter = readSafetensors(join(FIX, "intermediates.safetensors")).tensors;
  const dit = await fixtureModel;
  const ref = inter.get("call0.pos_embed.out")!; // [2, 16, 32]: conv patches + positions
  // patches of sample 0 by hand: conv with kernel = stride = 2
  const x = inputs.get("call0.hidden_states")!.data as Float32Array;
  const w = dit.params.get("pos_embed.proj.weight")!.data;
  const b = dit.params.get("pos_embed.proj.bias")!.data;
  const pos = positionEmbedding(32, 4, 4, 4).data;
  const ours = new Float32Array(16 * 32);
  for (let tok = 0; tok < 16; tok++) {
    const [r, c] = [Math.floor(tok / 4), tok % 4];
    for (let d = 0; d < 32; d++) {
      let s = b[d]!;
      for (let ch = 0; ch < 4; ch++)
        for (let i = 0; i < 2; i++)
          for (let j = 0; j < 2; j++)
            s += w[((d * 4 + ch) * 2 + i) * 2 + j]! * x[(ch * 8 + 2 * r + i) * 8 + 2 * c + j]!;
      ours[tok * 32 + d] = s + pos[tok * 32 + d]!;
    }
  }
  assert.ok(maxRel(ours, (ref.data as Float32Array).subarray(0, 16 * 32)) < 1e-5);
});

test("dit: parameter names, order and shapes equal diffusers' state dict", async () => {
  const dit = await fixtureModel;
  const keys = readFileSync(join(FIX, "weight_keys.txt"), "utf8")
    .trim()
    .split("\n")
    .map((l) => l.split("\t"));
  assert.deepEqual(
    dit.specs.map((s) => s.name),
    keys.map((k) => k[0]),
  );
  assert.deepEqual(
    dit.specs.map((s) => JSON.stringify(s.shape)),
    keys.map((k) => JSON.stringify(JSON.parse(k[2]!))),
  );
  assert.equal(dit.numParams, 124160);
});

const TINY = {
  _class_name: "DiTTransformer2DModel",
  num_attention_heads: 2,
  attention_head_dim: 8,
  in_channels: 1,
  num_layers: 2,
  sample_size: 8,
  patch_size: 2,
  num_embeds_ada_norm: 3,
};

test("dit: a fresh model is adaLN-Zero (outputs exactly 0); save → load gives identical outputs", async () => {
  const fresh = DiTTransformer2DModel.fromConfig(TINY, { seed: 1 });
  const x = new HostTensor<"float32">(new Rng(2).normal(2 * 64), [2, 1, 8, 8]);
  const y0 = await fresh.forward(x, [10, 500], { classLabels: [0, 3] });
  assert.ok(y0.toArray().every((v) => v === 0));
  assert.ok(
    fresh.specs.filter((s) => s.name.endsWith("norm1.linear.weight")).every((s) => s.init.kind === "zeros"),
  );
  // perturb every weight so the round trip is tested on non-trivial values
  const rng = new Rng(3);
  for (const [k, v] of fresh.params) fresh.params.set(k, new HostTensor(rng.normal(v.size, 0, 0.2), v.shape));
  const y1 = await fresh.forward(x, [10, 500], { classLabels: [0, 3] });
  assert.ok(y1.toArray().some((v) => v !== 0));
  const dir = join(tmp, "tiny");
  await fresh.savePretrained(dir);
  const cfg = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
  assert.equal(cfg._class_name, "DiTTransformer2DModel");
  assert.equal(cfg.num_embeds_ada_norm, 3);
  const back = await DiTTransformer2DModel.fromPretrained(dir);
  assert.deepEqual((await back.forward(x, [10, 500], { classLabels: [0, 3] })).data, y1.data);
  assert.deepEqual(back.config, fresh.config);
});

test("dit: bad configs, folders and inputs are answered clearly", async () => {
  assert.throws(
    () => DiTTransformer2DModel.fromConfig({ ...TINY, patch_size: 3 }),
    /"patch_size" is 3; use a divisor of sample_size \(8\)/,
  );
  assert.throws(
    () => DiTTransformer2DModel.fromConfig({ ...TINY, norm_type: "ada_norm" }),
    /"norm_type" is "ada_norm"; use "ada_norm_zero"/,
  );
  assert.throws(
    () => DiTTransformer2DModel.fromConfig({ ...TINY, num_embeds_ada_norm: null }),
    /num_embeds_ada_norm/,
  );
  assert.throws(
    () => DiTTransformer2DModel.fromConfig({ ...TINY, _class_name: "UNet2DModel" }),
    /"_class_name" is "UNet2DModel"/,
  );
  const m = DiTTransformer2DModel.fromConfig(TINY);
  const x = new HostTensor<"float32">(new Float32Array(64), [1, 1, 8, 8]);
  await assert.rejects(m.forward(x, 1), /DiT is class-conditional; pass \{ classLabels \}/);
  await assert.rejects(m.forward(x, 1, { classLabels: [4] }), /class label 4 is outside 0\.\.3/);
  await assert.rejects(m.forward(x, [1, 2, 3], { classLabels: [0] }), /3 timesteps for a batch of 1/);
  await assert.rejects(
    m.forward(new HostTensor<"float32">(new Float32Array(128), [1, 2, 8, 8]), 1, { classLabels: [0] }),
    /sample must be \[N, 1, H, W\] \(this model's in_channels\), got \[1, 2, 8, 8\]/,
  );
  const bad = join(tmp, "bad");
  await m.savePretrained(bad);
  const cfg = JSON.parse(readFileSync(join(bad, "config.json"), "utf8"));
  writeFileSync(join(bad, "config.json"), JSON.stringify({ ...cfg, num_layers: 3 }));
  await assert.rejects(
    DiTTransformer2DModel.fromPretrained(bad),
    /DiTTransformer2DModel .*missing "transformer_blocks\.2\./,
  );
  await assert.rejects(
    DiTTransformer2DModel.fromPretrained(join(tmp, "nope")),
    /DiTTransformer2DModel: no folder at/,
  );
});

test("dit: learned sigma — DDPM learned_range uses the variance channels; other samplers take the first channels", async () => {
  const { generate } = await import("../../src/pipelines/generate.ts");
  const { schedulerFor } = await import("../../src/pipelines/scheduler-names.ts");
  const { Scheduler } = await import("../../src/samplers/scheduler.ts");
  const dit = DiTTransformer2DModel.fromConfig({ ...TINY, out_channels: 2 }, { seed: 1 });
  const rng = new Rng(6);
  for (const [k, v] of dit.params) dit.params.set(k, new HostTensor(rng.normal(v.size, 0, 0.1), v.shape));
  const ddpm = { _class_name: "DDPMScheduler", num_train_timesteps: 1000, variance_type: "learned_range" };
  const opts = { labels: [0, 2], steps: 4, guidance: 1.5, seed: 2 };
  const learned = await generate(dit, Scheduler.fromConfig(ddpm), opts);
  const small = await generate(dit, Scheduler.fromConfig({ ...ddpm, variance_type: "fixed_small" }), opts);
  assert.deepEqual(learned.shape, [2, 1, 8, 8]);
  // the variance channel changes the DDPM noise scale: different samples from the same noise
  assert.notDeepEqual(learned.data, small.data);
  // DDIM reads only the prediction channel
  const ddim = await generate(dit, schedulerFor({ name: "ddim" }, ddpm), opts);
  assert.deepEqual(ddim.shape, [2, 1, 8, 8]);
  assert.ok(ddim.toArray().every((v) => v >= 0 && v <= 1));
});
