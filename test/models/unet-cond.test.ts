/**
 * UNet2DConditionModel against diffusers: the unet2d-cond fixture (a tiny diffusers v0.40 checkpoint
 * with cross-attention, its inputs and outputs), parameter names and order, the config table (round
 * trip, refused keys), ControlNet residuals (zero residuals change nothing; a mid residual acts as a
 * bias on the mid block's last convolution), the text conditioning feeds and their errors, options
 * the fixture does not use (linear projections, per-block heads, timestep_cond), the save/load round
 * trip, and a training step whose gradient reaches the cross-attention.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { type Conditioning, classCondition } from "../../src/diffusion/conditioning.ts";
import { readSafetensors } from "../../src/io/safetensors.ts";
import { loadModel } from "../../src/models/load.ts";
import { resolveDenoiser } from "../../src/models/registry.ts";
import {
  skipChannels,
  UNet2DConditionModel,
  unetCondConfigFromDiffusers,
  unetCondConfigToDiffusers,
} from "../../src/models/unet-cond/index.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import { initParams, type Params } from "../../src/tensor/params.ts";
import { Rng } from "../../src/tensor/rng.ts";
import { batchSpecs, diffusionLoss, drawBatch, type Objective } from "../../src/train/objective.ts";
import { compileTrainStep } from "../../src/train/train-step.ts";
import { maxRel } from "../support/allclose.ts";
import { TINY_UNET_COND } from "../support/tiny-models.ts";

const FIX = "test/fixtures/unet2d-cond";
const MODEL = join(FIX, "model");
const tmp = mkdtempSync(join(tmpdir(), "diffuse-unet-cond-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const fixtureModel = UNet2DConditionModel.fromPretrained(MODEL);
const inputs = readSafetensors(join(FIX, "inputs.safetensors")).tensors;
const sample = inputs.get("call0.sample") as HostTensor<"float32">; // [2, 4, 16, 16]
const timestep = inputs.get("call0.timestep")!; // int64 [3, 800]
const text = inputs.get("call0.encoder_hidden_states") as HostTensor<"float32">; // [2, 7, 32]

const randn = (rng: Rng, shape: number[], std = 1) =>
  new HostTensor<"float32">(
    rng.normal(
      shape.reduce((a, b) => a * b, 1),
      0,
      std,
    ),
    shape,
  );

test("unet2d-cond: reproduces diffusers within 1e-4", async (t) => {
  const unet = await fixtureModel;
  const ref = readSafetensors(join(FIX, "outputs.safetensors")).tensors.get("call0.sample")!;
  const y = await unet.forward(sample, timestep, { encoderHiddenStates: text });
  assert.deepEqual(y.shape, ref.shape);
  const rel = maxRel(y.data, ref.data as Float32Array);
  t.diagnostic(`max|a−b|/max|ref| = ${rel.toExponential(2)}`);
  assert.ok(rel <= 1e-4, `relative error ${rel}`);
});

test("unet2d-cond: parameter names, order and shapes equal diffusers' state dict", async () => {
  const unet = await fixtureModel;
  const keys = readFileSync(join(FIX, "weight_keys.txt"), "utf8")
    .trim()
    .split("\n")
    .map((l) => l.split("\t"));
  assert.deepEqual(
    unet.specs.map((s) => s.name),
    keys.map((k) => k[0]),
  );
  for (const [name, , shape] of keys) assert.deepEqual(unet.params.get(name!)!.shape, JSON.parse(shape!));
  assert.equal(unet.numParams, 792964);
  // PyTorch's defaults: LayerNorm/GroupNorm ones and zeros, Linear/Conv kaiming-uniform
  const init = new Map(unet.specs.map((s) => [s.name, s.init.kind]));
  const tb = "down_blocks.0.attentions.0.transformer_blocks.0";
  assert.equal(init.get(`${tb}.norm2.weight`), "ones");
  assert.equal(init.get(`${tb}.norm2.bias`), "zeros");
  assert.equal(init.get(`${tb}.attn2.to_k.weight`), init.get("conv_in.weight"));
});

test("unet2d-cond: the config table round-trips diffusers' config.json and refuses what it does not build", () => {
  const json = JSON.parse(readFileSync(join(MODEL, "config.json"), "utf8"));
  assert.deepEqual(unetCondConfigToDiffusers(unetCondConfigFromDiffusers(json)), json);
  const emoji = JSON.parse(readFileSync(join(FIX, "unet-cond-emoji.json"), "utf8"));
  assert.deepEqual(unetCondConfigFromDiffusers(emoji).attentionHeadDim, 8);
  const bad: [Record<string, unknown>, RegExp][] = [
    [
      { addition_embed_type: "text_time" },
      /"addition_embed_type" is "text_time"; use null \(an addition embedding .* is not supported\)/,
    ],
    [
      { dual_cross_attention: true },
      /"dual_cross_attention" is true; use false \(dual cross-attention is not supported\)/,
    ],
    [
      { num_attention_heads: 8 },
      /"num_attention_heads" is 8; use null \(diffusers' UNet2DConditionModel refuses it too/,
    ],
    [
      { class_embed_type: "timestep" },
      /"class_embed_type" is "timestep"; use null \(a class embedding is not supported\)/,
    ],
    [{ only_cross_attention: [false, true] }, /"only_cross_attention" is \[false,true\]; use false/],
    [{ time_embedding_type: "fourier" }, /"time_embedding_type" is "fourier"; use "positional"/],
    [
      { down_block_types: ["AttnDownBlock2D", "DownBlock2D"] },
      /"down_block_types\[0\]" is "AttnDownBlock2D"/,
    ],
    [
      { attention_head_dim: [2, 2, 2] },
      /"attention_head_dim" is \[2,2,2\]; use one value, or one per block \(2\)/,
    ],
    [{ transformer_layers_per_block: [[1, 2], 1] }, /nested lists for asymmetric U-Nets are not supported/],
    [
      { attention_head_dim: 3, use_linear_projection: true },
      /head counts that divide the block's channels \(8\)/,
    ],
    [{ conv_in_kernel: 2 }, /"conv_in_kernel" is 2; use an odd integer/],
  ];
  for (const [extra, msg] of bad) {
    assert.throws(() => resolveDenoiser({ ...TINY_UNET_COND, ...extra }), msg, JSON.stringify(extra));
  }
  assert.throws(
    () => resolveDenoiser({ ...TINY_UNET_COND, dual_cross_attention: true }),
    /^ConfigError: UNet2DConditionModel config/,
  );
});

/** Zero ControlNet residuals for a batch of the fixture's sample size. */
function zeroResiduals(unet: UNet2DConditionModel, n: number, side: number) {
  const down = skipChannels(unet.typedConfig).map(
    (s) =>
      HostTensor.zeros([n, s.channels, side / 2 ** s.scale, side / 2 ** s.scale]) as HostTensor<"float32">,
  );
  const last = unet.typedConfig.blockOutChannels.at(-1)!;
  const f = 2 ** (unet.typedConfig.blockOutChannels.length - 1);
  return { down, mid: HostTensor.zeros([n, last, side / f, side / f]) as HostTensor<"float32"> };
}

test("unet2d-cond: ControlNet residuals — zeros change nothing; a mid residual is a bias on the mid block's output", async () => {
  const unet = await fixtureModel;
  const plain = await unet.forward(sample, timestep, { encoderHiddenStates: text });
  const z = zeroResiduals(unet, 2, 16);
  assert.equal(z.down.length, 4); // conv_in, down_blocks.0's resnet and downsampler, down_blocks.1's resnet
  const withZeros = await unet.forward(sample, timestep, {
    encoderHiddenStates: text,
    downBlockAdditionalResiduals: z.down,
    midBlockAdditionalResidual: z.mid,
  });
  assert.ok(maxRel(withZeros.data, plain.data) <= 1e-6);

  // r_c per channel on the mid output = the same r added to the bias of its last convolution
  // (mid_block_scale_factor 1: the resnet's output is x + conv2(…))
  const r = new Rng(11).normal(64, 0, 0.5);
  const mid = new HostTensor<"float32">(
    new Float32Array(2 * 64 * 8 * 8).map((_, i) => r[Math.floor(i / 64) % 64]!),
    [2, 64, 8, 8],
  );
  const viaResidual = await unet.forward(sample, timestep, {
    encoderHiddenStates: text,
    downBlockAdditionalResiduals: z.down,
    midBlockAdditionalResidual: mid,
  });
  const params: Params = new Map(unet.params);
  const bias = params.get("mid_block.resnets.1.conv2.bias")!;
  params.set(
    "mid_block.resnets.1.conv2.bias",
    new HostTensor(
      bias.data.map((b, c) => b + r[c]!),
      bias.shape,
    ),
  );
  const viaBias = await UNet2DConditionModel.fromParams(unet.config, params).forward(sample, timestep, {
    encoderHiddenStates: text,
  });
  assert.ok(maxRel(viaResidual.data, plain.data) > 1e-2, "the mid residual changes the output");
  assert.ok(maxRel(viaResidual.data, viaBias.data) <= 1e-5, `${maxRel(viaResidual.data, viaBias.data)}`);

  // a residual on a skip reaches the output too
  const down = [...z.down];
  down[1] = randn(new Rng(12), [2, 32, 16, 16], 0.5);
  const viaSkip = await unet.forward(sample, timestep, {
    encoderHiddenStates: text,
    downBlockAdditionalResiduals: down,
    midBlockAdditionalResidual: z.mid,
  });
  assert.ok(maxRel(viaSkip.data, plain.data) > 1e-3);

  await assert.rejects(
    unet.forward(sample, timestep, { encoderHiddenStates: text, midBlockAdditionalResidual: z.mid }),
    /ControlNet residuals come in pairs/,
  );
  await assert.rejects(
    unet.forward(sample, timestep, {
      encoderHiddenStates: text,
      downBlockAdditionalResiduals: z.down.slice(1),
      midBlockAdditionalResidual: z.mid,
    }),
    /got 3 down_block_additional_residuals; this U-Net has 4 skips/,
  );
  await assert.rejects(
    unet.forward(sample, timestep, {
      encoderHiddenStates: text,
      downBlockAdditionalResiduals: z.down,
      midBlockAdditionalResidual: HostTensor.zeros([2, 64, 4, 4]) as HostTensor<"float32">,
    }),
    /mid_block_additional_residual must be \[2, 64, 8, 8\], got \[2, 64, 4, 4\]/,
  );
});

test("unet2d-cond: a text conditioning feeds encoder_hidden_states; any text length; clear errors", async () => {
  const unet = await fixtureModel;
  const cond: Conditioning = { kind: "text", embeds: text };
  const viaDenoise = await unet.denoise(sample, timestep, cond);
  const viaForward = await unet.forward(sample, timestep, { encoderHiddenStates: text });
  assert.deepEqual(viaDenoise.data, viaForward.data);
  assert.deepEqual(unet.bound.conditioning, { kind: "text", dim: 32, pooledDim: null });
  assert.deepEqual(unet.bound.condInputs(2), { encoder_hidden_states: { shape: [2, 77, 32] } });
  assert.deepEqual(unet.bound.condInputs(3, { textLength: 12 }), {
    encoder_hidden_states: { shape: [3, 12, 32] },
  });
  // other text lengths compile their own graph; the first one's is still right afterwards
  const long = randn(new Rng(13), [2, 77, 32]);
  const y77 = await unet.denoise(sample, timestep, { kind: "text", embeds: long });
  assert.deepEqual(y77.shape, [2, 4, 16, 16]);
  assert.ok(maxRel(y77.data, viaDenoise.data) > 1e-3);
  assert.deepEqual((await unet.denoise(sample, timestep, cond)).data, viaDenoise.data);

  await assert.rejects(
    unet.denoise(sample, timestep, { kind: "text", embeds: randn(new Rng(1), [2, 7, 16]) }),
    /UNet2DConditionModel: the text embeddings are \[2, 7, 16\], but cross_attention_dim is 32: use a text encoder whose hidden size is 32/,
  );
  await assert.rejects(
    unet.forward(sample, timestep, { encoderHiddenStates: randn(new Rng(1), [2, 7, 768]) }),
    /cross_attention_dim is 32/,
  );
  await assert.rejects(
    unet.denoise(sample, timestep, classCondition([1, 2])),
    /is text-conditioned .* not "class"/,
  );
  await assert.rejects(
    unet.denoise(sample, timestep, { kind: "text", embeds: text, pooled: randn(new Rng(1), [2, 8]) }),
    /takes no pooled text vector/,
  );
  await assert.rejects(
    unet.forward(sample, timestep, { encoderHiddenStates: randn(new Rng(1), [1, 7, 32]) }),
    /text embeddings for 1 samples and a batch of 2/,
  );
});

test("unet2d-cond: save → fromPretrained / loadModel give identical outputs", async () => {
  const unet = await fixtureModel;
  const dir = join(tmp, "saved");
  await unet.savePretrained(dir);
  const back = await loadModel(dir);
  assert.ok(back instanceof UNet2DConditionModel);
  assert.deepEqual(back.config, unet.config);
  const a = await unet.forward(sample, timestep, { encoderHiddenStates: text });
  const b = await (back as UNet2DConditionModel).forward(sample, timestep, { encoderHiddenStates: text });
  assert.deepEqual(b.data, a.data);
  assert.equal(
    JSON.parse(readFileSync(join(dir, "config.json"), "utf8"))._class_name,
    "UNet2DConditionModel",
  );
});

test("unet2d-cond: linear projections equal 1×1 convolutions; per-block heads, depth 2, scale_shift and timestep_cond run", async () => {
  const rng = new Rng(21);
  const conv = UNet2DConditionModel.fromConfig(TINY_UNET_COND, { seed: 1 });
  for (const [k, v] of conv.params) conv.params.set(k, randn(rng, [...v.shape], 0.2));
  const linearParams: Params = new Map(
    [...conv.params].map(([k, v]) =>
      /proj_(in|out)\.weight$/.test(k) ? [k, new HostTensor(v.data, v.shape.slice(0, 2))] : [k, v],
    ),
  );
  const lin = UNet2DConditionModel.fromParams(
    { ...TINY_UNET_COND, use_linear_projection: true },
    linearParams,
  );
  const x = randn(rng, [2, 1, 8, 8]);
  const e = randn(rng, [2, 5, 8]);
  const a = await conv.forward(x, [10, 900], { encoderHiddenStates: e });
  const b = await lin.forward(x, [10, 900], { encoderHiddenStates: e });
  assert.ok(maxRel(a.data, b.data) <= 1e-5);

  const richer = {
    ...TINY_UNET_COND,
    attention_head_dim: [2, 4],
    transformer_layers_per_block: [2, 1],
    layers_per_block: [1, 2],
    resnet_time_scale_shift: "scale_shift",
    mid_block_type: "UNetMidBlock2D",
    time_cond_proj_dim: 6,
  };
  const m = UNet2DConditionModel.fromConfig(richer, { seed: 2 });
  assert.ok(m.params.has("down_blocks.0.attentions.0.transformer_blocks.1.ff.net.2.weight"));
  assert.ok(m.params.has("time_embedding.cond_proj.weight"));
  assert.ok(!m.params.has("mid_block.attentions.0.norm.weight"));
  for (const [k, v] of m.params) m.params.set(k, randn(rng, [...v.shape], 0.2));
  const y0 = await m.forward(x, 500, { encoderHiddenStates: e });
  const yZero = await m.forward(x, 500, { encoderHiddenStates: e, timestepCond: HostTensor.zeros([2, 6]) });
  const yCond = await m.forward(x, 500, { encoderHiddenStates: e, timestepCond: randn(rng, [2, 6]) });
  assert.ok(maxRel(yZero.data, y0.data) <= 1e-6, "timestep_cond 0 adds nothing");
  assert.ok(maxRel(yCond.data, y0.data) > 1e-3, "timestep_cond changes the output");
  assert.ok(y0.toArray().every(Number.isFinite));
  await assert.rejects(
    conv.forward(x, 1, { encoderHiddenStates: e, timestepCond: HostTensor.zeros([2, 6]) }),
    /no time_cond_proj_dim/,
  );
});

test("unet2d-cond: a training step on text conditioning sends gradient through the cross-attention", async () => {
  const model = resolveDenoiser(TINY_UNET_COND);
  const specs = batchSpecs(model, 2, 8, { textLength: 5 });
  assert.deepEqual(specs["cond.encoder_hidden_states"], { shape: [2, 5, 8] });
  const step = await compileTrainStep(diffusionLoss(model), specs, {
    adamw: { weightDecay: 0 },
    ema: false,
  });
  const state = step.initState(initParams(model.paramSpecs(), new Rng(0)));
  const alphas = Float32Array.from(
    { length: 1000 },
    (_, t) => Math.cos(((t / 1000 + 0.008) / 1.008) * (Math.PI / 2)) ** 2,
  );
  const obj: Objective = {
    prediction: "epsilon",
    alphasCumprod: alphas,
    numTrainTimesteps: 1000,
    weighting: { kind: "uniform" },
    timesteps: { kind: "uniform" },
    nullLabel: null,
    condDropout: 0,
  };
  const rng = new Rng(5);
  const feeds = drawBatch(obj, randn(rng, [2, 1, 8, 8]), null, rng);
  feeds["cond.encoder_hidden_states"] = randn(rng, [2, 5, 8]);
  const key = "up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight";
  const before = state.params.get(key)!.toArray();
  const r = await step.step(state, feeds, 1e-3);
  await step.sync(state);
  assert.ok(Number.isFinite(r.loss) && r.gradNorm > 0, `loss ${r.loss}, grad norm ${r.gradNorm}`);
  const after = state.params.get(key)!.toArray();
  assert.ok(
    after.some((v, i) => v !== before[i]),
    "attn2.to_k (only reached through the text) was updated",
  );
  step.dispose();
});
