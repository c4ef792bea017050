/**
 * SD3Transformer2DModel (MM-DiT) against diffusers: the sd3-mmdit fixture (SD3-style: no qk norm, no
 * dual attention; the shared reference) and sd3-mmdit-sd35 (SD3.5-style: RMS qk norm, dual-attention
 * blocks, a non-square input cropped from the position table; made by diffusers itself, see its
 * README), parameter names and order, the stored position table, config and folder round trips, a
 * fresh model's adaLN-Zero properties, and the errors of bad configs and inputs.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { classCondition } from "../../src/diffusion/conditioning.ts";
import { readSafetensors } from "../../src/io/safetensors.ts";
import { loadModel } from "../../src/models/load.ts";
import {
  POS_TABLE,
  resolveSD3Config,
  SD3Transformer2DModel,
  sd3ConfigToDiffusers,
  sd3PositionTable,
} from "../../src/models/mmdit/index.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import { Rng } from "../../src/tensor/rng.ts";
import { maxRel } from "../support/allclose.ts";

const SD3 = "test/fixtures/sd3-mmdit";
const SD35 = "test/fixtures/sd3-mmdit-sd35";
const tmp = mkdtempSync(join(tmpdir(), "diffuse-mmdit-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const f32 = (t: HostTensor | undefined): HostTensor<"float32"> => t as HostTensor<"float32">;
const weightKeys = (dir: string) =>
  readFileSync(join(dir, "weight_keys.txt"), "utf8")
    .trim()
    .split("\n")
    .map((l) => l.split("\t") as [string, string, string]);

/** Runs a fixture's call through the model and returns max|a−b|/max|ref|. */
async function fixtureError(dir: string, prefix: string): Promise<number> {
  const m = await SD3Transformer2DModel.fromPretrained(join(dir, "model"));
  const inp = readSafetensors(join(dir, "inputs.safetensors")).tensors;
  const ref = readSafetensors(join(dir, "outputs.safetensors")).tensors.get(`${prefix}sample`)!;
  const y = await m.forward(f32(inp.get(`${prefix}hidden_states`)), inp.get(`${prefix}timestep`)!, {
    encoderHiddenStates: f32(inp.get(`${prefix}encoder_hidden_states`)),
    pooledProjections: f32(inp.get(`${prefix}pooled_projections`)),
  });
  assert.deepEqual(y.shape, ref.shape);
  m.dispose();
  return maxRel(y.data, ref.data as Float32Array);
}

test("sd3: reproduces diffusers within 1e-4 (SD3: joint attention, context_pre_only last block)", async (t) => {
  const rel = await fixtureError(SD3, "call0.");
  t.diagnostic(`max|a−b|/max|ref| = ${rel.toExponential(2)}`);
  assert.ok(rel <= 1e-4, `relative error ${rel}`);
});

test("sd3: reproduces diffusers within 1e-4 (SD3.5: RMS qk norm, dual attention, 8×12 input)", async (t) => {
  const rel = await fixtureError(SD35, "");
  t.diagnostic(`max|a−b|/max|ref| = ${rel.toExponential(2)}`);
  assert.ok(rel <= 1e-4, `relative error ${rel}`);
});

test("sd3: parameter names, order and shapes equal diffusers' state dict; the stored table is ours", async () => {
  for (const dir of [SD3, SD35]) {
    const m = await SD3Transformer2DModel.fromPretrained(join(dir, "model"));
    const keys = weightKeys(dir);
    assert.deepEqual(
      m.specs.map((s) => s.name),
      keys.map((k) => k[0]),
    );
    assert.deepEqual(
      m.specs.map((s) => JSON.stringify(s.shape)),
      keys.map((k) => JSON.stringify(JSON.parse(k[2]))),
    );
    // diffusers' persistent sincos buffer is the table a fresh model computes
    const stored = m.params.get(POS_TABLE)!;
    assert.ok(maxRel(sd3PositionTable(m.typedConfig).data, stored.data) < 1e-6, dir);
    // config.json as diffusers wrote it is what we write back
    const json = JSON.parse(readFileSync(join(dir, "model", "config.json"), "utf8"));
    assert.deepEqual(m.config, json);
  }
  const m = await SD3Transformer2DModel.fromPretrained(join(SD3, "model"));
  assert.equal(m.numParams, 26672);
});

/** An SD3.5-style tiny config: qk norm and dual attention in the first and the last block. */
const TINY = {
  _class_name: "SD3Transformer2DModel",
  sample_size: 8,
  patch_size: 2,
  in_channels: 2,
  out_channels: null,
  num_layers: 2,
  attention_head_dim: 4,
  num_attention_heads: 2,
  joint_attention_dim: 12,
  caption_projection_dim: 8,
  pooled_projection_dim: 6,
  pos_embed_max_size: 8,
  dual_attention_layers: [0, 1],
  qk_norm: "rms_norm",
};
const x = new HostTensor<"float32">(new Rng(2).normal(2 * 2 * 64), [2, 2, 8, 8]);
const text = {
  encoderHiddenStates: new HostTensor<"float32">(new Rng(3).normal(2 * 3 * 12), [2, 3, 12]),
  pooledProjections: new HostTensor<"float32">(new Rng(4).normal(2 * 6), [2, 6]),
};
const perturb = (m: SD3Transformer2DModel, seed: number, keep: (k: string) => boolean = () => false) => {
  const rng = new Rng(seed);
  for (const [k, v] of m.params)
    if (!keep(k)) m.params.set(k, new HostTensor(rng.normal(v.size, 0, 0.2), v.shape));
};

test("sd3: config round trip (diffusers keys → typed → the same keys; camelCase fields too)", () => {
  const c = resolveSD3Config(TINY);
  assert.equal(c.qkNorm, "rms_norm");
  assert.deepEqual(c.dualAttentionLayers, [0, 1]);
  const json = sd3ConfigToDiffusers(c);
  assert.deepEqual(resolveSD3Config(json), c);
  assert.deepEqual(sd3ConfigToDiffusers(resolveSD3Config(json)), json);
  assert.deepEqual(resolveSD3Config({ numLayers: 2, dualAttentionLayers: [1] }).dualAttentionLayers, [1]);
  // diffusers' defaults: SD3 (no qk norm, no dual attention), out_channels 16
  const d = resolveSD3Config({});
  assert.deepEqual([d.qkNorm, d.dualAttentionLayers, d.outChannels, d.posEmbedMaxSize], [null, [], 16, 96]);
});

test("sd3: a fresh SD3.5-style model traces and runs; adaLN-Zero makes it output 0 and its blocks the identity", async () => {
  const m = SD3Transformer2DModel.fromConfig(TINY, { seed: 1 });
  // the position table is the sincos table, not its spec's placeholder
  assert.deepEqual(m.params.get(POS_TABLE)!.data, sd3PositionTable(m.typedConfig).data);
  assert.ok(m.specs.some((s) => s.name === "transformer_blocks.1.attn2.norm_q.weight"));
  const y0 = await m.forward(x, [100, 900], text);
  assert.deepEqual(y0.shape, [2, 2, 8, 8]);
  assert.ok(y0.toArray().every((v) => v === 0));
  // with zero modulations (shift, scale, gate = 0) a block leaves the image tokens as they are: the
  // output depends on the patch embedding, the positions and the output layers, not on the blocks
  const zeroMod = (k: string) =>
    /transformer_blocks\.\d+\.norm1(_context)?\.linear/.test(k) || k === POS_TABLE;
  perturb(m, 5, zeroMod);
  const y1 = await m.forward(x, [100, 900], text);
  assert.ok(y1.toArray().some((v) => v !== 0));
  perturb(m, 6, (k) => zeroMod(k) || !k.startsWith("transformer_blocks."));
  assert.deepEqual((await m.forward(x, [100, 900], text)).data, y1.data);
  // …and once the modulations are not zero, they do
  perturb(m, 7, (k) => !/norm1(_context)?\.linear/.test(k));
  const y2 = await m.forward(x, [100, 900], text);
  assert.ok(maxRel(y2.data, y1.data) > 1e-3);
  // the class-independent entry: a text conditioning with its pooled vector
  const viaCond = await m.denoise(x, [100, 900], {
    kind: "text",
    embeds: text.encoderHiddenStates,
    pooled: text.pooledProjections,
  });
  assert.deepEqual(viaCond.data, y2.data);
});

test("sd3: save → load gives identical outputs (fromPretrained and loadModel)", async () => {
  const m = SD3Transformer2DModel.fromConfig(TINY, { seed: 2 });
  perturb(m, 8);
  const y = await m.forward(x, 500, text);
  const dir = join(tmp, "tiny");
  await m.savePretrained(dir);
  const cfg = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
  assert.equal(cfg._class_name, "SD3Transformer2DModel");
  assert.deepEqual(cfg.dual_attention_layers, [0, 1]);
  const back = await SD3Transformer2DModel.fromPretrained(dir);
  assert.deepEqual((await back.forward(x, 500, text)).data, y.data);
  assert.deepEqual(back.config, m.config);
  const any = await loadModel(dir);
  assert.ok(any instanceof SD3Transformer2DModel);
  assert.deepEqual((await any.forward(x, 500, text)).data, y.data);
});

test("sd3: bad configs are answered with the key and the fix", () => {
  const bad = (over: Record<string, unknown>, msg: RegExp) =>
    assert.throws(() => SD3Transformer2DModel.fromConfig({ ...TINY, ...over }), msg);
  bad(
    { pos_embed_max_size: 3 },
    /SD3Transformer2DModel config: "pos_embed_max_size" is 3; use at least sample_size \/ patch_size = 4/,
  );
  bad({ pos_embed_max_size: null }, /"pos_embed_max_size" is null; use an integer ≥ 1/);
  bad(
    { caption_projection_dim: 12 },
    /"caption_projection_dim" is 12; use num_attention_heads × attention_head_dim \(2 × 4 = 8\)/,
  );
  bad({ qk_norm: "layer_norm" }, /"qk_norm" is "layer_norm"; use null \(SD3\) or "rms_norm"/);
  bad({ dual_attention_layers: [0, 2] }, /"dual_attention_layers" is \[0,2\]; use block indices 0\.\.1/);
  bad({ dual_attention_layers: 3 }, /"dual_attention_layers" is 3; use a list of block indices/);
  bad({ dual_attention_layers: [-1] }, /"dual_attention_layers\[0\]" is -1; use an integer ≥ 0/);
  bad({ patch_size: 3 }, /"patch_size" is 3; use a divisor of sample_size \(8\)/);
  bad({ num_embeds_ada_norm: 10 }, /"num_embeds_ada_norm" belong to a class-conditional DiT or a U-Net/);
});

test("sd3: bad inputs and folders are answered clearly", async () => {
  const m = SD3Transformer2DModel.fromConfig(TINY);
  const embeds = text.encoderHiddenStates;
  const pooled = text.pooledProjections;
  const wide = new HostTensor<"float32">(new Float32Array(2 * 3 * 16), [2, 3, 16]);
  await assert.rejects(
    m.forward(x, 1, { encoderHiddenStates: wide, pooledProjections: pooled }),
    /the text embeddings are \[2, 3, 16\], but joint_attention_dim is 12: pad the text encoders' features to 12/,
  );
  await assert.rejects(
    m.forward(x, 1, {
      encoderHiddenStates: embeds,
      pooledProjections: new HostTensor(new Float32Array(8), [2, 4]),
    }),
    /the pooled text vectors are \[2, 4\], but pooled_projection_dim is 6/,
  );
  await assert.rejects(
    m.forward(x, 1, { encoderHiddenStates: embeds }),
    /SD3 is text-conditioned; pass \{ encoderHiddenStates \} \[N, L, 12\] and \{ pooledProjections \} \[N, 6\]/,
  );
  // 20×20 is 10×10 patches: more than the 8×8 position grid
  const big = new HostTensor<"float32">(new Float32Array(2 * 2 * 400), [2, 2, 20, 20]);
  await assert.rejects(
    m.forward(big, 1, text),
    /a 20×20 input is 10×10 patches, but positions exist for at most 8×8 \(pos_embed_max_size 8\); pass at most 16×16/,
  );
  const odd = new HostTensor<"float32">(new Float32Array(2 * 2 * 63), [2, 2, 7, 9]);
  await assert.rejects(m.forward(odd, 1, text), /multiples of patch_size 2, got 7×9/);
  await assert.rejects(
    m.denoise(x, 1, classCondition([0, 1])),
    /text-conditioned; pass a "text" conditioning/,
  );
  await assert.rejects(
    m.denoise(x, 1, { kind: "text", embeds }),
    /needs the pooled text vector too: add "pooled" \[N, 6\]/,
  );
  // a folder whose config disagrees with its weights (joint_attention_dim 12 → 16)
  const dir = join(tmp, "bad");
  await m.savePretrained(dir);
  const cfg = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
  writeFileSync(join(dir, "config.json"), JSON.stringify({ ...cfg, joint_attention_dim: 16 }));
  await assert.rejects(
    SD3Transformer2DModel.fromPretrained(dir),
    /tensor "context_embedder\.weight" has shape \[8, 12\], but the config needs \[8, 16\]/,
  );
});
