/**
 * AutoencoderKL against diffusers: the vae-kl fixture (a tiny diffusers v0.40 checkpoint, 3×32×32 ↔
 * 4×16×16, with its inputs, outputs and intermediates): encode (mean, clamped logvar, std) and decode
 * within max|a−b|/max|ref| ≤ 1e-4, parameter names and order, the save/load round trip in F32 and
 * F16, sliced decoding, and the errors of bad folders and inputs.
 */
import assert from "node:assert/strict";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { readSafetensors } from "../../src/io/safetensors.ts";
import { AutoencoderKL, sampleLatent, vaeParamSpecs } from "../../src/models/vae/index.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import { Rng } from "../../src/tensor/rng.ts";
import { maxRel } from "../support/allclose.ts";

const FIX = "test/fixtures/vae-kl";
const MODEL = join(FIX, "model");
const tmp = mkdtempSync(join(tmpdir(), "diffuse-vae-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const fixtureModel = AutoencoderKL.fromPretrained(MODEL);
const inputs = readSafetensors(join(FIX, "inputs.safetensors")).tensors;
const outputs = readSafetensors(join(FIX, "outputs.safetensors")).tensors;
const x = inputs.get("encode.x") as HostTensor<"float32">;
const ref = (name: string) => outputs.get(name)!.data as Float32Array;

test("vae: encode and decode reproduce diffusers within 1e-4", async (t) => {
  const vae = await fixtureModel;
  const dist = await vae.encode(x);
  assert.deepEqual(dist.mean.shape, [2, 4, 16, 16]);
  for (const k of ["mean", "logvar", "std"] as const) {
    const rel = maxRel(dist[k].data, ref(`encode.latent_dist.${k}`));
    t.diagnostic(`encode ${k}: max|a−b|/max|ref| = ${rel.toExponential(2)}`);
    assert.ok(rel <= 1e-4, `${k}: relative error ${rel}`);
  }
  const z = outputs.get("encode.latent_dist.mean") as HostTensor<"float32">;
  const y = await vae.decode(z);
  assert.deepEqual(y.shape, [2, 3, 32, 32]);
  const rel = maxRel(y.data, ref("decode.sample"));
  t.diagnostic(`decode: max|a−b|/max|ref| = ${rel.toExponential(2)}`);
  assert.ok(rel <= 1e-4, `decode: relative error ${rel}`);
  assert.equal(vae.scalingFactor, 0.18215);
  assert.equal(vae.shiftFactor, null);
});

test("vae: parameter names, order and shapes equal diffusers' state dict", async () => {
  const vae = await fixtureModel;
  const keys = readFileSync(join(FIX, "weight_keys.txt"), "utf8")
    .trim()
    .split("\n")
    .map((l) => l.split("\t"));
  assert.deepEqual(
    vae.specs.map((s) => s.name),
    keys.map((k) => k[0]),
  );
  assert.deepEqual(
    vae.specs.map((s) => JSON.stringify(s.shape)),
    keys.map((k) => JSON.stringify(JSON.parse(k[2]!))),
  );
  assert.equal(vae.numParams, 658375);
});

test("vae: the posterior's sample is mean + std·ε, reproducible from the Rng", async () => {
  const vae = await fixtureModel;
  const dist = await vae.encode(x);
  const a = dist.sample(new Rng(7));
  const b = sampleLatent(dist, new Rng(7));
  assert.deepEqual(a.data, b.data);
  const eps = new Rng(7).normal(a.size);
  const i = 123;
  assert.ok(Math.abs(a.data[i]! - (dist.mean.data[i]! + dist.std.data[i]! * eps[i]!)) < 1e-6);
  assert.equal(dist.mode(), dist.mean);
});

test("vae: save → load round trip in F32 (identical) and F16 (within half precision); a pipeline folder's vae/", async () => {
  const vae = await fixtureModel;
  const z = outputs.get("encode.latent_dist.mean") as HostTensor<"float32">;
  const y = await vae.decode(z);
  const f32 = join(tmp, "f32");
  await vae.savePretrained(f32);
  const cfg = JSON.parse(readFileSync(join(f32, "config.json"), "utf8"));
  assert.equal(cfg._class_name, "AutoencoderKL");
  assert.deepEqual(cfg.block_out_channels, [32, 64]);
  const back = await AutoencoderKL.fromPretrained(f32);
  assert.deepEqual((await back.decode(z)).data, y.data);
  assert.deepEqual(back.diffusersConfig, vae.diffusersConfig);

  const pipe = join(tmp, "pipeline");
  await vae.savePretrained(join(pipe, "vae"), { dtype: "F16" });
  writeFileSync(join(pipe, "model_index.json"), JSON.stringify({ _class_name: "StableDiffusionPipeline" }));
  const half = await AutoencoderKL.fromPretrained(pipe);
  const rel = maxRel((await half.decode(z)).data, y.data);
  assert.ok(rel > 0 && rel < 1e-2, `F16 round trip: relative error ${rel}`);
});

test("vae: sliced decode and encode equal the whole batch", async () => {
  const vae = AutoencoderKL.fromConfig(
    {
      block_out_channels: [8, 16],
      down_block_types: ["DownEncoderBlock2D", "DownEncoderBlock2D"],
      up_block_types: ["UpDecoderBlock2D", "UpDecoderBlock2D"],
      norm_num_groups: 4,
      latent_channels: 2,
    },
    { seed: 3 },
  );
  const z = new HostTensor<"float32">(new Rng(1).normal(5 * 2 * 4 * 4), [5, 2, 4, 4]);
  vae.disableSlicing();
  const whole = await vae.decode(z);
  const sliced = await vae.decode(z, { sliceSize: 2 });
  assert.deepEqual(sliced.shape, [5, 3, 8, 8]);
  assert.ok(maxRel(sliced.data, whole.data) < 1e-6);
  vae.enableSlicing();
  assert.ok(maxRel((await vae.decode(z)).data, whole.data) < 1e-6);
  const img = new HostTensor<"float32">(new Rng(2).uniform(5 * 3 * 8 * 8, -1, 1), [5, 3, 8, 8]);
  const a = await vae.encode(img);
  const b = await vae.encode(img, { sliceSize: 3 });
  assert.ok(maxRel(b.mean.data, a.mean.data) < 1e-6 && maxRel(b.logvar.data, a.logvar.data) < 1e-6);
  vae.dispose();
});

test("vae: a fresh model has PyTorch's default init and the config's geometry", () => {
  const specs = vaeParamSpecs({
    block_out_channels: [32, 64],
    down_block_types: ["DownEncoderBlock2D", "DownEncoderBlock2D"],
    up_block_types: ["UpDecoderBlock2D", "UpDecoderBlock2D"],
    norm_num_groups: 16,
    layers_per_block: 1,
  });
  const conv = specs.find((s) => s.name === "encoder.conv_in.weight")!;
  assert.deepEqual(conv.init, { kind: "uniform", bound: 1 / Math.sqrt(3 * 9) });
  assert.deepEqual(specs.find((s) => s.name === "decoder.conv_norm_out.weight")!.init, { kind: "ones" });
  const noQuant = vaeParamSpecs({
    use_quant_conv: false,
    use_post_quant_conv: false,
    mid_block_add_attention: false,
  });
  assert.ok(!noQuant.some((s) => s.name.includes("quant_conv") || s.name.includes("attentions")));
});

test("vae: bad configs, folders and inputs are answered clearly", async () => {
  const vae = await fixtureModel;
  await assert.rejects(
    () => AutoencoderKL.fromPretrained(join(tmp, "nowhere")),
    /AutoencoderKL: no folder at/,
  );
  const empty = join(tmp, "empty");
  mkdirSync(empty, { recursive: true });
  await assert.rejects(() => AutoencoderKL.fromPretrained(empty), /has no config.json/);
  const unet = join(tmp, "unet-like");
  cpSync(MODEL, unet, { recursive: true });
  writeFileSync(join(unet, "config.json"), JSON.stringify({ _class_name: "UNet2DModel" }));
  await assert.rejects(
    () => AutoencoderKL.fromPretrained(unet),
    /this loader reads "AutoencoderKL" configs only/,
  );
  assert.throws(
    () => AutoencoderKL.fromConfig({ block_out_channels: [32, 64] }),
    /"down_block_types" is \["DownEncoderBlock2D"\]; use 2 entries/,
  );
  assert.throws(
    () => AutoencoderKL.fromConfig({ down_block_types: ["DownBlock2D"] }),
    /"down_block_types\[0\]" is "DownBlock2D"; use "DownEncoderBlock2D"/,
  );
  assert.throws(
    () => AutoencoderKL.fromConfig({ norm_num_groups: 5 }),
    /"norm_num_groups" is 5; use a divisor/,
  );
  assert.throws(
    () => AutoencoderKL.fromConfig({ act_fn: "gelu" }),
    /"act_fn" is "gelu"; use "silu" or "swish"/,
  );
  await assert.rejects(
    () => vae.encode(HostTensor.zeros([1, 1, 32, 32])),
    /images must be \[N, 3, H, W\] \(in_channels\), got \[1, 1, 32, 32\]/,
  );
  await assert.rejects(
    () => vae.encode(HostTensor.zeros([1, 3, 31, 32])),
    /height and width must be multiples of 2 \(2\^\(blocks − 1\) = 2\^1\), got 31×32/,
  );
  await assert.rejects(
    () => vae.decode(HostTensor.zeros([1, 3, 16, 16])),
    /latents must be \[N, 4, h, w\] \(latent_channels\), got \[1, 3, 16, 16\]/,
  );
});
