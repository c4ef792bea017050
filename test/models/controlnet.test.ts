/**
 * ControlNetModel against diffusers: the controlnet fixture (diffusers' `from_unet` of the unet2d-cond
 * fixture with a (16, 32) conditioning embedding, every zero convolution perturbed), its residuals at
 * scale 1, and what follows from them exactly (conditioning_scale, guess mode's logspace, bgr order,
 * global pooling); parameter names and order; the config table; `fromUnet` (diffusers' config, the
 * copied encoder, zero convolutions making the ControlNet a no-op, alone and joined to the U-Net in
 * one graph); a train graph whose only trainable weights are the ControlNet's; save → load; and the errors for bad control images and folders.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { readSafetensors } from "../../src/io/safetensors.ts";
import {
  CONTROLNET_SCOPE,
  ControlNetModel,
  controlNetConfigFromDiffusers,
  controlNetConfigToDiffusers,
  inControlNetScope,
  unet2dConditionWithControlNet,
} from "../../src/models/controlnet/index.ts";
import { UNet2DConditionModel } from "../../src/models/unet-cond/index.ts";
import { compileGraph, trace } from "../../src/runtime/compile.ts";
import { grad } from "../../src/tensor/autodiff.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import * as o from "../../src/tensor/ops.ts";
import { ParamScope } from "../../src/tensor/params.ts";
import { Rng } from "../../src/tensor/rng.ts";
import { maxRel } from "../support/allclose.ts";
import { TINY_UNET_COND } from "../support/tiny-models.ts";

const FIX = "test/fixtures/controlnet";
const MODEL = join(FIX, "model");
const UNET = "test/fixtures/unet2d-cond/model";
const tmp = mkdtempSync(join(tmpdir(), "diffuse-controlnet-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const fixtureModel = ControlNetModel.fromPretrained(MODEL);
const fixtureUnet = UNet2DConditionModel.fromPretrained(UNET);
const inputs = readSafetensors(join(FIX, "inputs.safetensors")).tensors;
const sample = inputs.get("call0.sample") as HostTensor<"float32">; // [2, 4, 16, 16]
const timestep = inputs.get("call0.timestep")!; // int64 [2]
const text = inputs.get("call0.encoder_hidden_states") as HostTensor<"float32">; // [2, 7, 32]
const cond = inputs.get("call0.controlnet_cond") as HostTensor<"float32">; // [2, 3, 32, 32]
const outputs = readSafetensors(join(FIX, "outputs.safetensors")).tensors;
const refDown = [0, 1, 2, 3].map(
  (i) => outputs.get(`call0.down_block_res_samples.${i}`)!.data as Float32Array,
);
const refMid = outputs.get("call0.mid_block_res_sample")!.data as Float32Array;
const call = { encoderHiddenStates: text, controlnetCond: cond };

/** Asserts every residual is within 1e-4 (relative to its largest value) of ref·factor(i) (i = 4: mid). */
function assertResiduals(
  r: { downBlockResSamples: HostTensor<"float32">[]; midBlockResSample: HostTensor<"float32"> },
  factor: (i: number) => number,
  what: string,
): number {
  assert.equal(r.downBlockResSamples.length, 4, `${what}: one residual per U-Net skip`);
  let worst = 0;
  [...r.downBlockResSamples, r.midBlockResSample].forEach((t, i) => {
    const ref = i < 4 ? refDown[i]! : refMid;
    const want = Float32Array.from(ref, (v) => v * factor(i));
    const rel = maxRel(t.data, want);
    assert.ok(rel <= 1e-4, `${what}: residual ${i < 4 ? `down ${i}` : "mid"}: relative error ${rel}`);
    worst = Math.max(worst, rel);
  });
  return worst;
}

test("controlnet: reproduces diffusers' residuals within 1e-4", async (t) => {
  const cn = await fixtureModel;
  const r = await cn.forward(sample, timestep, { ...call, conditioningScale: 1 });
  const shapes = [...r.downBlockResSamples, r.midBlockResSample].map((x) => x.shape.join("x"));
  assert.deepEqual(shapes, ["2x32x16x16", "2x32x16x16", "2x32x8x8", "2x64x8x8", "2x64x8x8"]);
  t.diagnostic(`max|a−b|/max|ref| = ${assertResiduals(r, () => 1, "scale 1").toExponential(2)}`);
});

test("controlnet: conditioning_scale, guess mode (logspace 0.1 → 1), bgr order and global pooling", async () => {
  const cn = await fixtureModel;
  assertResiduals(
    await cn.forward(sample, timestep, { ...call, conditioningScale: 0.5 }),
    () => 0.5,
    "scale 0.5",
  );
  // diffusers: torch.logspace(-1, 0, 5) · scale, the last for the mid block
  const logspace = [0.1, 0.17782794100389226, 0.31622776601683794, 0.5623413251903491, 1];
  const guess = await cn.forward(sample, timestep, { ...call, conditioningScale: 0.8, guessMode: true });
  assertResiduals(guess, (i) => 0.8 * logspace[i]!, "guess mode");

  const bgr = ControlNetModel.fromParams(
    { ...cn.diffusersConfig, controlnet_conditioning_channel_order: "bgr" },
    cn.params,
  );
  const [n, c, h, w] = cond.shape as [number, number, number, number];
  const flipped = new Float32Array(cond.size);
  for (let b = 0; b < n; b++) {
    for (let k = 0; k < c; k++) {
      const from = (b * c + k) * h * w;
      flipped.set(cond.data.subarray(from, from + h * w), (b * c + (c - 1 - k)) * h * w);
    }
  }
  const rb = await bgr.forward(sample, timestep, {
    ...call,
    controlnetCond: new HostTensor(flipped, cond.shape),
  });
  assertResiduals(rb, () => 1, "bgr");

  const pooled = ControlNetModel.fromParams(
    { ...cn.diffusersConfig, global_pool_conditions: true },
    cn.params,
  );
  const rp = await pooled.forward(sample, timestep, { ...call, guessMode: true }); // guess mode is off when pooling
  const all = [...rp.downBlockResSamples, rp.midBlockResSample];
  all.forEach((t, i) => {
    const ref = i < 4 ? refDown[i]! : refMid;
    const [nn, cc] = t.shape as [number, number];
    assert.deepEqual(t.shape, [nn, cc, 1, 1]);
    const hw = ref.length / (nn * cc);
    const means = Float32Array.from({ length: nn * cc }, (_, j) => {
      let s = 0;
      for (let q = 0; q < hw; q++) s += ref[j * hw + q]!;
      return s / hw;
    });
    assert.ok(maxRel(t.data, means) <= 1e-4, `pooled residual ${i}`);
  });
});

test("controlnet: parameter names, order and shapes equal diffusers' state dict; zero convolutions start at zero", async () => {
  const cn = await fixtureModel;
  const keys = readFileSync(join(FIX, "weight_keys.txt"), "utf8")
    .trim()
    .split("\n")
    .map((l) => l.split("\t"));
  assert.deepEqual(
    cn.specs.map((s) => s.name),
    keys.map((k) => k[0]),
  );
  assert.equal(cn.numParams, 423344);
  const init = new Map(cn.specs.map((s) => [s.name, s.init.kind]));
  for (const name of ["controlnet_down_blocks.3.weight", "controlnet_mid_block.bias"]) {
    assert.equal(init.get(name), "zeros", name);
  }
  assert.equal(init.get("controlnet_cond_embedding.conv_out.weight"), "zeros");
  assert.equal(init.get("controlnet_cond_embedding.blocks.1.weight"), "uniform");
});

test("controlnet: the config table round-trips diffusers' config.json and refuses what it does not build", () => {
  const json = JSON.parse(readFileSync(join(MODEL, "config.json"), "utf8"));
  const cfg = controlNetConfigFromDiffusers(json);
  assert.deepEqual(controlNetConfigToDiffusers(cfg), json);
  assert.deepEqual(cfg.conditioningEmbeddingOutChannels, [16, 32]);
  const bad: [Record<string, unknown>, RegExp][] = [
    [
      { controlnet_conditioning_channel_order: "rgba" },
      /"controlnet_conditioning_channel_order" is "rgba"; use "rgb" or "bgr"/,
    ],
    [
      { addition_embed_type: "text_time" },
      /ControlNetModel config: "addition_embed_type" is "text_time"; use null/,
    ],
    [{ layers_per_block: [1, 1] }, /"layers_per_block" is \[1,1\]; use an integer ≥ 1/],
    [{ mid_block_type: null }, /"mid_block_type" is null; use "UNetMidBlock2DCrossAttn" or "UNetMidBlock2D"/],
    [
      { down_block_types: ["DownBlock2D"] },
      /"down_block_types" \(1\) and "block_out_channels" \(2\) must have the same length/,
    ],
    [
      { norm_num_groups: 5 },
      /ControlNetModel config: "norm_num_groups" is 5; use a divisor of every block_out_channels/,
    ],
    [
      { conditioning_embedding_out_channels: [] },
      /"conditioning_embedding_out_channels" is \[\]; use a non-empty list/,
    ],
  ];
  for (const [patch, re] of bad)
    assert.throws(() => controlNetConfigFromDiffusers({ ...json, ...patch }), re);
});

test("controlnet: fromUnet is diffusers' from_unet (config, copied encoder) and its zero convolutions make it a no-op", async () => {
  const unet = await fixtureUnet;
  const fixture = await fixtureModel;
  const cn = ControlNetModel.fromUnet(unet, { conditioningEmbeddingOutChannels: [16, 32] });
  assert.deepEqual(cn.diffusersConfig, JSON.parse(readFileSync(join(MODEL, "config.json"), "utf8")));
  assert.deepEqual([...cn.params.keys()], [...fixture.params.keys()]);
  for (const [name, w] of cn.params) {
    if (/^(conv_in|time_embedding|down_blocks|mid_block)\./.test(name)) {
      assert.deepEqual(w.data, fixture.params.get(name)!.data, `${name} is the U-Net's (as the fixture's)`);
    } else if (/^controlnet_(down_blocks|mid_block)|conv_out/.test(name)) {
      assert.ok(
        w.data.every((v) => v === 0),
        `${name} starts at zero`,
      );
    }
  }

  const r = await cn.forward(sample, timestep, call);
  for (const t of [...r.downBlockResSamples, r.midBlockResSample]) assert.ok(t.data.every((v) => v === 0));
  const alone = await unet.forward(sample, timestep, { encoderHiddenStates: text });
  const steered = await unet.forward(sample, timestep, {
    encoderHiddenStates: text,
    downBlockAdditionalResiduals: r.downBlockResSamples,
    midBlockAdditionalResidual: r.midBlockResSample,
  });
  assert.ok(maxRel(steered.data, alone.data) <= 1e-6, "a fresh ControlNet leaves the U-Net unchanged");

  // both networks in one graph: the fresh ControlNet is a no-op, the fixture's equals its residuals fed
  const joined = async (control: ControlNetModel) => {
    const { graph, outputs } = trace(
      {
        sample: { shape: sample.shape },
        timestep: { shape: [2] },
        text: { shape: text.shape },
        cond: { shape: cond.shape },
      },
      (inp, g) => {
        const scope = ParamScope.frozen(g, new Map([...unet.params, ...inControlNetScope(control.params)]));
        const out = unet2dConditionWithControlNet(
          scope,
          unet.typedConfig,
          scope.sub(CONTROLNET_SCOPE),
          control.config,
          inp.sample,
          inp.timestep,
          { encoderHiddenStates: inp.text, controlnetCond: inp.cond, conditioningScale: 0.7 },
        );
        return { out };
      },
    );
    const session = await compileGraph(graph, outputs, { cache: false });
    const t = new HostTensor(Float32Array.from(timestep.toArray()), [2]);
    const y = (await session.run({ sample, timestep: t, text, cond }))["out"]!;
    session.dispose();
    return y.data as Float32Array;
  };
  assert.ok(maxRel(await joined(cn), alone.data) <= 1e-6, "one graph: a fresh ControlNet is a no-op");
  const fr = await fixture.forward(sample, timestep, { ...call, conditioningScale: 0.7 });
  const fed = await unet.forward(sample, timestep, {
    encoderHiddenStates: text,
    downBlockAdditionalResiduals: fr.downBlockResSamples,
    midBlockAdditionalResidual: fr.midBlockResSample,
  });
  assert.ok(maxRel(fed.data, alone.data) > 1e-3, "the fixture's ControlNet steers the U-Net");
  assert.ok(maxRel(await joined(fixture), fed.data) <= 1e-5, "one graph equals the two models run apart");
});

test("controlnet: in a train graph beside a frozen U-Net, the zero convolutions take the first gradient", async () => {
  const unet = UNet2DConditionModel.fromConfig(TINY_UNET_COND);
  const cn = ControlNetModel.fromUnet(unet, { conditioningEmbeddingOutChannels: [4, 8] });
  const names: string[] = [];
  const specs = {
    x: { shape: [2, 1, 8, 8] },
    t: { shape: [2] },
    e: { shape: [2, 3, 8] },
    c: { shape: [2, 3, 16, 16] },
  };
  const { graph, outputs } = trace(specs, (inp, g) => {
    const root = ParamScope.root(g, { frozen: unet.params });
    const control = root.sub(CONTROLNET_SCOPE);
    const out = unet2dConditionWithControlNet(root, unet.typedConfig, control, cn.config, inp.x, inp.t, {
      encoderHiddenStates: inp.e,
      controlnetCond: inp.c,
    });
    const loss = o.mean(o.mul(out, out));
    names.push(...root.specs.map((s) => s.name));
    return Object.fromEntries(grad(loss, root.tensors).map((d, i) => [`d${i}`, d]));
  });
  assert.equal(names.length, cn.params.size, "the U-Net is frozen: only the ControlNet's weights are inputs");
  assert.ok(names.every((n) => n.startsWith(`${CONTROLNET_SCOPE}.`)));
  const session = await compileGraph(graph, outputs, { cache: false });
  const r = new Rng(1);
  const feeds: Record<string, HostTensor> = {
    x: new HostTensor(r.normal(128), [2, 1, 8, 8]),
    t: new HostTensor(Float32Array.of(10, 500), [2]),
    e: new HostTensor(r.normal(48), [2, 3, 8]),
    c: new HostTensor(r.uniform(2 * 3 * 256, 0, 1), [2, 3, 16, 16]),
  };
  for (const n of names) feeds[n] = cn.params.get(n.slice(CONTROLNET_SCOPE.length + 1))!;
  const res = await session.run(feeds);
  session.dispose();
  names.forEach((n, i) => {
    const largest = (res[`d${i}`]!.data as Float32Array).reduce((a, v) => Math.max(a, Math.abs(v)), 0);
    // zero convolutions stop the gradient to everything before them until they move
    if (/controlnet_(down_blocks|mid_block)\./.test(n)) assert.ok(largest > 1e-4, `${n} gets a gradient`);
    else assert.equal(largest, 0, `${n}: no gradient through the zero convolutions yet`);
  });
});

test("controlnet: save → load gives the same config, weights and residuals; a pipeline folder's controlnet/ is found", async () => {
  const cn = await fixtureModel;
  const dir = join(tmp, "pipe", "controlnet");
  await cn.savePretrained(dir);
  const back = await ControlNetModel.fromPretrained(join(tmp, "pipe"));
  assert.deepEqual(back.diffusersConfig, cn.diffusersConfig);
  for (const [name, w] of cn.params) assert.deepEqual(back.params.get(name)!.data, w.data, name);
  const a = await cn.forward(sample, timestep, call);
  const b = await back.forward(sample, timestep, call);
  assert.deepEqual(b.midBlockResSample.data, a.midBlockResSample.data);
});

test("controlnet: clear errors for a wrong control image, missing inputs, a missing folder, a U-Net it cannot copy", async () => {
  const cn = await fixtureModel;
  const small = new HostTensor<"float32">(new Float32Array(2 * 3 * 16 * 16), [2, 3, 16, 16]);
  await assert.rejects(
    cn.forward(sample, timestep, { ...call, controlnetCond: small }),
    /controlnetCond must be \[2, 3, 32, 32\], got \[2, 3, 16, 16\]; the control image must be 2× the 16×16 sample: resize it to 32×32/,
  );
  const grey = new HostTensor<"float32">(new Float32Array(2 * 32 * 32), [2, 1, 32, 32]);
  await assert.rejects(
    cn.forward(sample, timestep, { ...call, controlnetCond: grey }),
    /this ControlNet takes 3-channel control images \(conditioning_channels\)/,
  );
  await assert.rejects(
    cn.forward(sample, timestep, { encoderHiddenStates: text } as never),
    /pass \{ encoderHiddenStates, controlnetCond \}/,
  );
  await assert.rejects(
    cn.forward(sample, timestep, { ...call, conditioningScale: Number.NaN }),
    /conditioningScale must be a finite number/,
  );
  await assert.rejects(
    ControlNetModel.fromPretrained(join(tmp, "nowhere")),
    /ControlNetModel: no folder at .*nowhere/,
  );
  await assert.rejects(
    ControlNetModel.fromPretrained(FIX),
    /ControlNetModel: test\/fixtures\/controlnet has no config.json/,
  );
  const unet = await fixtureUnet;
  const lcm = { typedConfig: { ...unet.typedConfig, timeCondProjDim: 16 }, params: unet.params };
  assert.throws(
    () => ControlNetModel.fromUnet(lcm),
    /the U-Net's "time_cond_proj_dim" is 16; a ControlNetModel copies only U-Nets with null/,
  );
});
