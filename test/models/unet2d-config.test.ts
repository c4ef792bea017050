/**
 * UNet2DModel beyond the diffusers fixture: the config mapper (defaults, validation messages), resnet
 * up/downsampling and class embeddings "timestep" / "identity", fresh initialization, and the traced
 * forward composed into a training graph (gradients, dropout fed with noise).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { readSafetensors } from "../../src/io/safetensors.ts";
import {
  DROPOUT_NOISE_PREFIX,
  dropoutNoiseInputs,
  initUNet,
  UNet2DModel,
  unetConfig,
  unetConfigFromDiffusers,
  unetConfigToDiffusers,
  unetForward,
} from "../../src/models/unet/index.ts";
import { mse } from "../../src/nn/losses.ts";
import { compileGraph, trace } from "../../src/runtime/compile.ts";
import { grad } from "../../src/tensor/autodiff.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import { ParamScope, type Params } from "../../src/tensor/params.ts";
import { Rng } from "../../src/tensor/rng.ts";
import { maxRel } from "../support/allclose.ts";

const TINY = {
  in_channels: 1,
  out_channels: 1,
  block_out_channels: [8, 16],
  layers_per_block: 1,
  down_block_types: ["DownBlock2D", "AttnDownBlock2D"],
  up_block_types: ["AttnUpBlock2D", "UpBlock2D"],
  norm_num_groups: 4,
  num_class_embeds: 3,
};

const noise = (shape: readonly number[], seed: number): HostTensor<"float32"> =>
  new HostTensor(
    new Rng(seed).normal(
      shape.reduce((a, b) => a * b, 1),
      0,
      1,
    ),
    shape,
  );

test("config: diffusers defaults, every key written back, UNetRes prefixes, harmless keys ignored", () => {
  const c = unetConfigFromDiffusers({ _name_or_path: "x", some_future_key: 1 });
  assert.deepEqual(c.blockOutChannels, [224, 448, 672, 896]);
  assert.equal(c.attentionHeadDim, 8);
  assert.equal(c.normNumGroups, 32);
  assert.equal(c.flipSinToCos, true);
  const json = unetConfigToDiffusers(c);
  assert.equal(json["_class_name"], "UNet2DModel");
  assert.equal(Object.keys(json).length, 30); // 28 UNet2DModel arguments + _class_name, _diffusers_version
  assert.deepEqual(Object.keys(json).slice(2), Object.keys(json).slice(2).sort());
  assert.deepEqual(unetConfigFromDiffusers(json), c);
  const r = unetConfigFromDiffusers({ ...TINY, down_block_types: ["UNetResDownBlock2D", "AttnDownBlock2D"] });
  assert.deepEqual(r.downBlockTypes, ["DownBlock2D", "AttnDownBlock2D"]);
  const typed = unetConfig({
    blockOutChannels: [8, 16],
    normNumGroups: 4,
    downBlockTypes: ["DownBlock2D", "DownBlock2D"],
    upBlockTypes: ["UpBlock2D", "UpBlock2D"],
  });
  assert.deepEqual(unetConfigToDiffusers(typed)["block_out_channels"], [8, 16]);
});

test("config: errors name the key, the value and what is allowed", () => {
  const bad: [Record<string, unknown>, RegExp][] = [
    [{ ...TINY, norm_num_groups: 3 }, /"norm_num_groups" is 3; use a divisor of every block_out_channels/],
    [{ ...TINY, up_block_types: ["UpBlock2D"] }, /must have the same length/],
    [
      { ...TINY, down_block_types: ["DownBlock2D", "CrossAttnDownBlock2D"] },
      /"down_block_types\[1\]" is "CrossAttnDownBlock2D"; use "DownBlock2D" or "AttnDownBlock2D"/,
    ],
    [{ ...TINY, time_embedding_type: "fourier" }, /"time_embedding_type" is "fourier"; use "positional"/],
    [{ ...TINY, resnet_time_scale_shift: "spatial" }, /"resnet_time_scale_shift" is "spatial"/],
    [{ ...TINY, mid_block_type: "UNetMidBlock2DCrossAttn" }, /"mid_block_type"/],
    [{ ...TINY, downsample_type: "fir" }, /"downsample_type" is "fir"; use "conv" or "resnet"/],
    [{ ...TINY, class_embed_type: "projection" }, /"class_embed_type" is "projection"/],
    [{ ...TINY, attention_head_dim: 32 }, /"attention_head_dim" is 32; use at most 16/],
    [{ ...TINY, attention_head_dim: [8, 8] }, /"attention_head_dim" is \[8,8\]/],
    [{ ...TINY, attn_norm_num_groups: 3 }, /"attn_norm_num_groups" is 3/],
    [{ ...TINY, dropout: 1 }, /"dropout" is 1; use a probability in \[0, 1\)/],
    [{ ...TINY, layers_per_block: 0 }, /"layers_per_block" is 0; use an integer ≥ 1/],
    [{ ...TINY, block_out_channels: [] }, /"block_out_channels" is \[\]; use a non-empty list/],
    [{ ...TINY, _class_name: "UNet2DConditionModel" }, /"_class_name" is "UNet2DConditionModel"/],
    [{ ...TINY, cross_attention_dim: 768 }, /"cross_attention_dim" belong to another U-Net/],
  ];
  for (const [json, re] of bad) assert.throws(() => UNet2DModel.fromConfig(json), re, JSON.stringify(json));
  assert.throws(
    () => UNet2DModel.fromConfig({ blockOutChannels: [8], norm_num_groups: 4 }),
    /mixes diffusers keys/,
  );
  assert.throws(() => unetConfig({ bogus: 1 } as never), /no field "bogus"/);
});

test("fromConfig: seeded PyTorch-default init; typed and diffusers configs agree", () => {
  const a = UNet2DModel.fromConfig(TINY, { seed: 7 });
  const b = UNet2DModel.fromConfig(
    {
      inChannels: 1,
      outChannels: 1,
      blockOutChannels: [8, 16],
      layersPerBlock: 1,
      downBlockTypes: ["DownBlock2D", "AttnDownBlock2D"],
      upBlockTypes: ["AttnUpBlock2D", "UpBlock2D"],
      normNumGroups: 4,
      numClassEmbeds: 3,
    },
    { seed: 7 },
  );
  assert.deepEqual(b.config, a.config);
  for (const [k, v] of a.params) assert.deepEqual(b.params.get(k)!.data, v.data);
  const direct = initUNet(unetConfigFromDiffusers(TINY), new Rng(7));
  assert.deepEqual([...direct.keys()], [...a.params.keys()]);
  for (const [k, v] of a.params) assert.deepEqual(direct.get(k)!.data, v.data);
  const c = UNet2DModel.fromConfig(TINY, { seed: 8 });
  assert.notDeepEqual(c.params.get("conv_in.weight")!.data, a.params.get("conv_in.weight")!.data);
  const p = a.params;
  assert.ok(p.get("conv_norm_out.weight")!.data.every((v) => v === 1));
  assert.ok(p.get("down_blocks.0.resnets.0.norm1.bias")!.data.every((v) => v === 0));
  const bound = 1 / Math.sqrt(8 * 3 * 3); // conv1 of the first resnet: fan_in = 8·3·3
  const w = p.get("down_blocks.0.resnets.0.conv1.weight")!.data;
  assert.ok(w.every((v) => Math.abs(v) <= bound) && w.some((v) => Math.abs(v) > 0.9 * bound));
  const emb = p.get("class_embedding.weight")!.data; // N(0, 1), 3 × 32 draws
  const rms = Math.sqrt(emb.reduce((s, v) => s + v * v, 0) / emb.length);
  assert.ok(rms > 0.7 && rms < 1.3, `class embedding rms ${rms}`);
});

test("resnet down/upsampling and class_embed_type timestep (fixture from an extended PyTorch reference)", async (t) => {
  const dir = "test/fixtures/unet-configs/variants/resnet-sampling";
  const unet = await UNet2DModel.fromPretrained(dir);
  const names = [...unet.params.keys()];
  assert.ok(names.includes("down_blocks.1.downsamplers.0.time_emb_proj.weight"));
  assert.ok(names.includes("up_blocks.0.upsamplers.0.conv2.weight"));
  assert.ok(!names.includes("down_blocks.0.downsamplers.0.norm1.weight"), "DownBlock2D keeps its conv");
  assert.ok(names.includes("class_embedding.linear_2.bias"));
  const io = readSafetensors(`${dir}/io.safetensors`).tensors;
  const y = await unet.forward(io.get("sample") as HostTensor<"float32">, io.get("timestep")!, {
    classLabels: io.get("class_labels")!,
  });
  const rel = maxRel(y.data, io.get("out")!.data as Float32Array);
  t.diagnostic(`max rel ${rel.toExponential(2)}`);
  assert.ok(rel <= 1e-4);
});

test("class_embed_type identity adds the given vectors to the time embedding", async () => {
  const cfg = { ...TINY, num_class_embeds: null, class_embed_type: "identity", time_embedding_dim: 20 };
  const withId = UNet2DModel.fromConfig(cfg, { seed: 3 });
  const plain = UNet2DModel.fromParams({ ...cfg, class_embed_type: null }, withId.params);
  const x = noise([2, 1, 8, 8], 1);
  const zero = await withId.forward(x, [3, 400], { classLabels: HostTensor.zeros([2, 20]) });
  assert.deepEqual(zero.data, (await plain.forward(x, [3, 400])).data);
  const other = await withId.forward(x, [3, 400], { classLabels: HostTensor.full([2, 20], 0.5) });
  assert.notDeepEqual(other.data, zero.data);
});

/** Traces unetForward + an MSE loss and its gradient into one graph, as a training step would. */
async function trainingGraph(config: Record<string, unknown>) {
  const n = 2;
  const { graph, outputs } = trace(
    {
      x: { shape: [n, 1, 8, 8] },
      t: { shape: [n] },
      y: { shape: [n], dtype: "int64" },
      target: { shape: [n, 1, 8, 8] },
    },
    (inp, g) => {
      const scope = ParamScope.root(g);
      const out = unetForward(scope, config, inp.x, inp.t, inp.y, { dropoutNoise: dropoutNoiseInputs(g) });
      const loss = mse(out, inp.target);
      const [gw] = grad(loss, [
        scope.tensors.find((p) => p.inputName === "down_blocks.0.resnets.0.conv1.weight")!,
      ]);
      return { out, loss, gw: gw! };
    },
  );
  const noiseInputs = graph.inputs.filter((i) => i.inputName!.startsWith(DROPOUT_NOISE_PREFIX));
  return { compiled: await compileGraph(graph, outputs), noiseInputs };
}

test("unetForward composes into a training graph: gradients match finite differences", async () => {
  const unet = UNet2DModel.fromConfig(TINY, { seed: 5 });
  const { compiled, noiseInputs } = await trainingGraph(TINY);
  assert.equal(noiseInputs.length, 0, "no dropout sites with dropout 0");
  const x = noise([2, 1, 8, 8], 2);
  const feeds = (params: Params) => ({
    x,
    t: new HostTensor(Float32Array.of(10, 900), [2]),
    y: HostTensor.int64([0, 2]),
    target: noise([2, 1, 8, 8], 3),
    ...Object.fromEntries(params),
  });
  const r = await compiled.run(feeds(unet.params));
  const eval_ = await unet.forward(x, [10, 900], { classLabels: [0, 2] });
  assert.ok(maxRel(r["out"]!.data as Float32Array, eval_.data) < 1e-5);
  const name = "down_blocks.0.resnets.0.conv1.weight";
  const gw = r["gw"]!.data as Float32Array;
  for (const i of [0, 17, 300]) {
    const loss = async (delta: number) => {
      const w = unet.params.get(name)!.clone();
      w.data[i]! += delta;
      const out = await compiled.run(feeds(new Map([...unet.params, [name, w]])));
      return (out["loss"]!.data as Float32Array)[0]!;
    };
    const h = 1e-2;
    const fd = ((await loss(h)) - (await loss(-h))) / (2 * h);
    assert.ok(Math.abs(fd - gw[i]!) <= 2e-2 * Math.abs(gw[i]!) + 1e-4, `∂loss/∂w[${i}]: ${gw[i]} vs ${fd}`);
  }
});

test("dropout > 0: one noise input per resnet; kept units scaled by 1/(1 − p), dropped ones zeroed", async () => {
  const cfg = { ...TINY, dropout: 0.5 };
  const unet = UNet2DModel.fromConfig(cfg, { seed: 6 });
  const { compiled, noiseInputs } = await trainingGraph(cfg);
  const conv2 = [...unet.params.keys()].filter((k) => k.endsWith(".conv2.weight"));
  assert.equal(noiseInputs.length, conv2.length);
  const x = noise([2, 1, 8, 8], 4);
  const run = async (u: number) => {
    const feeds: Record<string, HostTensor> = {
      x,
      t: new HostTensor(Float32Array.of(1, 2), [2]),
      y: HostTensor.int64([1, 1]),
      target: x,
      ...Object.fromEntries(unet.params),
    };
    for (const i of noiseInputs) feeds[i.inputName!] = HostTensor.full(i.shape, u);
    return (await compiled.run(feeds))["out"]!.data as Float32Array;
  };
  // Dropout sits right before each resnet's conv2, so scaling its input is scaling conv2.weight.
  const scaled = (f: number) =>
    UNet2DModel.fromParams(
      cfg,
      new Map(
        [...unet.params].map(([k, v]) => [
          k,
          conv2.includes(k)
            ? new HostTensor(
                v.data.map((e) => e * f),
                v.shape,
              )
            : v,
        ]),
      ),
    );
  const kept = await scaled(2).forward(x, [1, 2], { classLabels: [1, 1] });
  assert.ok(maxRel(await run(0.9), kept.data) < 1e-5);
  const dropped = await scaled(0).forward(x, [1, 2], { classLabels: [1, 1] });
  assert.ok(maxRel(await run(0.1), dropped.data) < 1e-5);
  // Inference ignores dropout.
  assert.notDeepEqual((await unet.forward(x, [1, 2], { classLabels: [1, 1] })).data, kept.data);
});

test("forward embeds the weights; replacing a value in params recompiles for the new weights", async () => {
  const a = UNet2DModel.fromConfig(TINY, { seed: 7 });
  const b = UNet2DModel.fromConfig(TINY, { seed: 8 });
  const x = new HostTensor<"float32">(new Rng(1).normal(2 * 16 * 16), [2, 1, 16, 16]);
  const run = (m: UNet2DModel) => m.forward(x, [10, 900], { classLabels: [0, 2] });
  const ya = await run(a);
  const yb = await run(b);
  assert.notDeepEqual(ya.data, yb.data);
  // swap every weight of a for b's: the next forward must be b's, bit for bit
  for (const [k, v] of b.params) a.params.set(k, v);
  assert.deepEqual((await run(a)).data, yb.data);
  // one weight changed: the output changes with it
  const w = b.params.get("conv_out.bias")!;
  a.params.set(
    "conv_out.bias",
    new HostTensor(
      w.data.map((v) => v + 1),
      w.shape,
    ),
  );
  const shifted = await run(a);
  assert.ok(Math.abs(shifted.data[0]! - yb.data[0]! - 1) < 1e-5);
  a.dispose();
  assert.deepEqual((await run(a)).data, shifted.data); // compiled again after dispose
});
