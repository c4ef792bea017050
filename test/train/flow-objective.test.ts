/**
 * Rectified flow's training draw (objective.ts): the time u from the sampler (logit-normal, SD3's
 * default) becomes σ = shift·u / (1 + (shift − 1)·u) with the scheduler's `shift`, as diffusers' SD3
 * training draws from its shifted σ table; x_t = (1 − σ)·x0 + σ·ε, the target ε − x0, the model's
 * timestep σ·1000. A denoiser's buffers (SD3's position table) are never among the trained weights.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { sampleFlowTimes } from "../../src/diffusion/losses.ts";
import { resolveDenoiser } from "../../src/models/registry.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import { Rng } from "../../src/tensor/rng.ts";
import { componentBuffers, componentParams, denoiserComponent } from "../../src/train/checkpoint.ts";
import { resolveConfig } from "../../src/train/config.ts";
import { drawBatch, objectiveOf } from "../../src/train/objective.ts";

const TEXT = {
  text_encoder: { architectures: ["CLIPTextModelWithProjection"], hidden_size: 8, projection_dim: 4 },
  tokenizer: { vocab_size: 600 },
  vae: { path: "vae" },
};
const SD3 = {
  _class_name: "SD3Transformer2DModel",
  sample_size: 4,
  patch_size: 2,
  in_channels: 1,
  out_channels: 1,
  num_layers: 1,
  num_attention_heads: 1,
  attention_head_dim: 8,
  caption_projection_dim: 8,
  joint_attention_dim: 8,
  pooled_projection_dim: 4,
  pos_embed_max_size: 3,
};

test("flow objective: logit-normal u shifted by the scheduler's shift (SD3: 3.0)", () => {
  const cfg = resolveConfig({
    ...TEXT,
    model: SD3,
    scheduler: { _class_name: "FlowMatchEulerDiscreteScheduler", num_train_timesteps: 1000, shift: 3.0 },
    training: { timestep_sampling: "logit-normal", logit_mean: 0.2, logit_std: 1.3 },
  });
  const obj = objectiveOf(cfg, resolveDenoiser(SD3));
  assert.equal(obj.prediction, "flow");
  assert.equal(obj.flowShift, 3);
  const x0 = new HostTensor<"float32">(new Float32Array(5 * 16).fill(0.5), [5, 1, 4, 4]);
  const b = drawBatch(obj, x0, null, new Rng(7));
  // the same stream: ε first, then the times
  const rng = new Rng(7);
  rng.normal(x0.size);
  const u = sampleFlowTimes(rng, 5, { kind: "logit-normal", mean: 0.2, std: 1.3 });
  const f = (k: string) => b[k]!.data as Float32Array;
  u.forEach((ui, i) => {
    const sig = (3 * ui) / (1 + 2 * ui);
    assert.ok(Math.abs(f("s")[i]! - sig) < 1e-6, `σ ${f("s")[i]} vs ${sig}`);
    assert.ok(Math.abs(f("a")[i]! - (1 - sig)) < 1e-6);
    assert.ok(Math.abs(f("t")[i]! - 1000 * sig) < 1e-3);
    assert.deepEqual([f("tx")[i], f("te")[i]], [-1, 1]); // target ε − x0
  });
  // shift 1: σ = u
  const plain = objectiveOf(
    resolveConfig({ ...TEXT, model: SD3, scheduler: { _class_name: "FlowMatchEulerDiscreteScheduler" } }),
    resolveDenoiser(SD3),
  );
  const r2 = new Rng(7);
  r2.normal(x0.size);
  assert.deepEqual(
    Array.from(drawBatch(plain, x0, null, new Rng(7))["s"]!.data as Float32Array),
    Array.from(Float32Array.from(sampleFlowTimes(r2, 5))),
  );
});

test("flow objective: SD3's position table is a buffer — out of the trained specs, given back with the weights", () => {
  const cfg = resolveConfig({
    ...TEXT,
    model: SD3,
    scheduler: { _class_name: "FlowMatchEulerDiscreteScheduler" },
  });
  const c = denoiserComponent(cfg, "transformer.");
  assert.ok(!c.specs.some((s) => s.name === "pos_embed.pos_embed"));
  assert.deepEqual([...componentBuffers([c]).keys()], ["transformer.pos_embed.pos_embed"]);
  const all = new Map(c.specs.map((s) => [`transformer.${s.name}`, HostTensor.zeros(s.shape)]));
  const params = componentParams(c, all);
  assert.equal(params.size, c.specs.length + 1);
  assert.deepEqual(params.get("pos_embed.pos_embed")!.shape, [1, 9, 8]);
});
