/**
 * LoRA against diffusers (the lora-cond fixture: a rank-4, alpha-8 adapter on the attention projections
 * of the unet2d-cond model, in diffusers/PEFT and kohya files, with diffusers' outputs of the fused
 * model at scales 1 and 0.5), and its own promises: fused equals unfused, unfusing restores the
 * weights bit for bit, a zero B changes nothing, several adapters add up with their scales, files
 * round trip with their alphas, unknown keys and other architectures are refused by name, and a
 * training step with the base frozen changes only the adapters.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { readSafetensors, writeSafetensors } from "../../src/io/safetensors.ts";
import {
  fuseLora,
  type LoraLayer,
  loadLoraWeights,
  loraLayerNames,
  readLoraFile,
  saveLoraWeights,
  setLoraScale,
  unfuseLora,
} from "../../src/models/lora/index.ts";
import { CLIPTextModel } from "../../src/models/text/clip-text-model.ts";
import { UNet2DModel } from "../../src/models/unet/index.ts";
import { UNet2DConditionModel } from "../../src/models/unet-cond/index.ts";
import { relu } from "../../src/nn/activations.ts";
import { linear } from "../../src/nn/linear.ts";
import { loraNames, uniformLoraPlan } from "../../src/nn/lora.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import * as o from "../../src/tensor/ops.ts";
import { initParams, type ParamScope, partitionParams } from "../../src/tensor/params.ts";
import { Rng } from "../../src/tensor/rng.ts";
import type { Tensor } from "../../src/tensor/symbolic.ts";
import { compileTrainStep, paramSpecsOf } from "../../src/train/train-step.ts";
import { maxRel } from "../support/allclose.ts";

const FIX = "test/fixtures/lora-cond";
const BASE = "test/fixtures/unet2d-cond";
const PEFT = join(FIX, "pytorch_lora_weights.safetensors");
const KOHYA = join(FIX, "kohya_lora.safetensors");
const tmp = mkdtempSync(join(tmpdir(), "diffuse-lora-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const inputs = readSafetensors(join(BASE, "inputs.safetensors")).tensors;
const sample = inputs.get("call0.sample") as HostTensor<"float32">;
const timestep = inputs.get("call0.timestep")!;
const text = inputs.get("call0.encoder_hidden_states") as HostTensor<"float32">;
const outputs = readSafetensors(join(FIX, "outputs.safetensors")).tensors;
const intermediates = readSafetensors(join(FIX, "intermediates.safetensors")).tensors;
const base = () => UNet2DConditionModel.fromPretrained(join(BASE, "model"));
const run = (m: UNet2DConditionModel) => m.forward(sample, timestep, { encoderHiddenStates: text });

const randn = (rng: Rng, shape: number[], std: number) =>
  new HostTensor<"float32">(
    rng.normal(
      shape.reduce((a, b) => a * b, 1),
      0,
      std,
    ),
    shape,
  );

for (const [dialect, file] of [
  ["diffusers", PEFT],
  ["kohya", KOHYA],
] as const) {
  for (const scale of [1, 0.5]) {
    test(`lora-cond: a ${dialect} file at scale ${scale} reproduces diffusers' fused model, unfused and fused`, async (t) => {
      const unet = await base();
      const report = await loadLoraWeights(unet, file, { scale });
      assert.equal(report.dialect, dialect);
      assert.deepEqual(report.layers, { unet: 32 }); // 100% of the file's layers map
      assert.deepEqual(report.unmapped, []);
      const ref = outputs.get(`scale${scale}.sample`)!.data as Float32Array;
      const unfused = await run(unet);
      const relU = maxRel(unfused.data, ref);
      fuseLora(unet);
      const fused = await run(unet);
      const relF = maxRel(fused.data, ref);
      t.diagnostic(`max|a−b|/max|ref|: unfused ${relU.toExponential(2)}, fused ${relF.toExponential(2)}`);
      assert.ok(relU <= 1e-4 && relF <= 1e-4, `unfused ${relU}, fused ${relF}`);
      assert.ok(maxRel(fused.data, unfused.data) <= 1e-5, "fused equals unfused");
    });
  }
}

test("lora-cond: fusing at scale 1 gives diffusers' fused weights; unfusing restores the originals bit for bit", async () => {
  const unet = await base();
  const before = new Map(unet.params);
  const y0 = await run(unet);
  await loadLoraWeights(unet, PEFT);
  fuseLora(unet);
  let n = 0;
  for (const [k, ref] of intermediates) {
    const m = /^scale1\.fused\.(.+)$/.exec(k);
    if (!m) continue;
    n++;
    const w = unet.params.get(m[1]!)!;
    assert.ok(maxRel(w.data, ref.data as Float32Array) <= 1e-6, m[1]);
  }
  assert.equal(n, 32);
  unfuseLora(unet);
  for (const [k, v] of before) assert.equal(unet.params.get(k), v, `${k} restored`);
  // loaded but set to 0: the base model's output exactly
  setLoraScale(unet, "pytorch_lora_weights", 0);
  assert.deepEqual((await run(unet)).data, y0.data);
});

test("lora: both dialects read to the same matrices and alphas; a saved file reads back with its alpha", () => {
  const peft = readLoraFile(PEFT);
  const kohya = readLoraFile(KOHYA);
  const p = peft.components.get("unet")!;
  const k = kohya.components.get("unet")!;
  assert.equal(p.size, 32);
  assert.equal(k.size, 32);
  const layer = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q";
  assert.equal(p.get(layer)!.alpha, 8);
  const kl = k.get(layer.replace(/\./g, "_"))!;
  assert.equal(kl.alpha, 8);
  assert.deepEqual(kl.a!.data, p.get(layer)!.a!.data);
  assert.deepEqual(kl.b!.data, p.get(layer)!.b!.data);
});

test("lora: save → load round trip (diffusers file, metadata alpha) gives the same outputs", async () => {
  const unet = await base();
  await loadLoraWeights(unet, KOHYA, { adapterName: "k" });
  const y = await run(unet);
  const out = join(tmp, "round.safetensors");
  saveLoraWeights(out, unet, "k");
  const st = readSafetensors(out);
  const meta = JSON.parse(st.metadata["lora_adapter_metadata"]!) as Record<string, unknown>;
  assert.equal(meta["unet.lora_alpha"], 8);
  assert.equal(meta["unet.r"], 4);
  assert.equal((meta["unet.target_modules"] as string[]).length, 32);
  assert.ok(st.tensors.has("unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_out.0.lora_B.weight"));
  const again = await base();
  await loadLoraWeights(again, out);
  assert.deepEqual((await run(again)).data, y.data);
});

test("lora: several adapters at once, each with its scale, equal their fused sum", async () => {
  const unet = await base();
  const rng = new Rng(3);
  const layers = new Map<string, LoraLayer>();
  for (const l of ["mid_block.attentions.0.transformer_blocks.0.attn1.to_v", "conv_in"]) {
    const w = unet.params.get(`${l}.weight`)!;
    const [out, ...rest] = w.shape;
    layers.set(l, {
      a: randn(rng, [2, ...rest], 0.1),
      b: randn(rng, w.shape.length === 4 ? [out!, 2, 1, 1] : [out!, 2], 0.1),
      alpha: 2,
    });
  }
  await loadLoraWeights(unet, PEFT, { scale: 0.7, adapterName: "style" });
  unet.lora.add("extra", layers, 0.5); // a convolution adapter too (PEFT's k×k A, 1×1 B)
  const y = await run(unet);
  fuseLora(unet);
  const yf = await run(unet);
  assert.ok(maxRel(yf.data, y.data) <= 1e-5);
  unfuseLora(unet);
  setLoraScale(unet, "extra", 0);
  const only = await run(unet);
  const single = await base();
  await loadLoraWeights(single, PEFT, { scale: 0.7 });
  assert.ok(maxRel(only.data, (await run(single)).data) <= 1e-6);
});

test("lora: keys that do not map are listed by name and nothing is loaded; a file for another model is refused", async () => {
  const kohya = readSafetensors(KOHYA);
  const extra = new Map(kohya.tensors);
  extra.set(
    "lora_unet_input_blocks_1_1_proj_in.lora_down.weight",
    new HostTensor(new Float32Array(8), [2, 4]),
  );
  extra.set("lora_unet_mid_block_attentions_0_proj_in.hada_w1_a", new HostTensor(new Float32Array(4), [4]));
  const bad = join(tmp, "extra.safetensors");
  writeSafetensors(bad, extra, { metadata: kohya.metadata });
  const unet = await base();
  await assert.rejects(
    loadLoraWeights(unet, bad),
    (e: Error) =>
      /2 key\(s\) do not map onto UNet2DConditionModel/.test(e.message) &&
      e.message.includes("lora_unet_input_blocks_1_1_proj_in.lora_down.weight") &&
      e.message.includes("hada_w1_a"),
  );
  assert.deepEqual(unet.lora.names, []);
  const report = await loadLoraWeights(unet, bad, { allowUnmapped: true });
  assert.equal(report.unmapped.length, 2);
  assert.deepEqual(report.layers, { unet: 32 });

  // every layer missing from the model: another architecture
  const other = new Map<string, HostTensor>();
  other.set(
    "unet.single_transformer_blocks.0.attn.to_q.lora_A.weight",
    new HostTensor(new Float32Array(8), [2, 4]),
  );
  other.set(
    "unet.single_transformer_blocks.0.attn.to_q.lora_B.weight",
    new HostTensor(new Float32Array(8), [4, 2]),
  );
  const otherFile = join(tmp, "other.safetensors");
  writeSafetensors(otherFile, other);
  await assert.rejects(loadLoraWeights(await base(), otherFile), /for another model or architecture/);

  // a layer that exists with other widths
  const wrong = new Map<string, HostTensor>();
  const layer = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q";
  wrong.set(`${layer}.lora_A.weight`, new HostTensor(new Float32Array(4 * 64), [4, 64]));
  wrong.set(`${layer}.lora_B.weight`, new HostTensor(new Float32Array(32 * 4), [32, 4]));
  const wrongFile = join(tmp, "wrong.safetensors");
  writeSafetensors(wrongFile, wrong);
  await assert.rejects(
    loadLoraWeights(await base(), wrongFile),
    /do not fit the weight \[32, 32\].*another model/,
  );
});

test("lora: a text encoder takes the file's text_encoder part (both dialects' names)", async () => {
  const te = CLIPTextModel.fromConfig({
    hidden_size: 32,
    intermediate_size: 37,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    vocab_size: 99,
    max_position_embeddings: 16,
  });
  const ids = [[1, 5, 7, 98, 2]];
  const y0 = await te.forward(ids);
  const rng = new Rng(5);
  const tensors = new Map<string, HostTensor>();
  const layer = "text_model.encoder.layers.1.self_attn.v_proj";
  tensors.set(`lora_te_${layer.replace(/\./g, "_")}.lora_down.weight`, randn(rng, [2, 32], 0.2));
  tensors.set(`lora_te_${layer.replace(/\./g, "_")}.lora_up.weight`, randn(rng, [32, 2], 0.2));
  tensors.set(`lora_te_${layer.replace(/\./g, "_")}.alpha`, new HostTensor(Float32Array.of(1), []));
  const f = join(tmp, "te.safetensors");
  writeSafetensors(f, tensors);
  const r = await loadLoraWeights(te, f);
  assert.deepEqual(r.layers, { text_encoder: 1 });
  const y1 = await te.forward(ids);
  assert.ok(
    maxRel(y1.lastHiddenState.data, y0.lastHiddenState.data) > 1e-4,
    "the adapter changes the output",
  );
  fuseLora(te);
  assert.ok(maxRel((await te.forward(ids)).lastHiddenState.data, y1.lastHiddenState.data) <= 1e-5);
});

test("lora: a fresh adapter (B = 0) leaves the model unchanged, and a train step changes only A and B", async () => {
  // a tiny two-layer model: y = W2 · relu(W1 x)
  const net = (scope: ParamScope, x: Tensor) =>
    linear(scope.sub("out"), relu(linear(scope.sub("hidden").sub("to_q"), x, 8)), 3);
  const plan = uniformLoraPlan({ rank: 2, alpha: 4, targets: ["to_q"] });
  const specs = paramSpecsOf((s, g) => net(s, g.input("x", [4, 5])), { lora: plan });
  const names = loraNames("hidden.to_q", "default");
  assert.deepEqual(
    specs.map((s) => s.name),
    ["hidden.to_q.weight", names.a, names.b, "hidden.to_q.bias", "out.weight", "out.bias"],
  );
  const params = initParams(specs, new Rng(1));
  assert.ok(
    params.get(names.b)!.data.every((v) => v === 0),
    "B starts at zero",
  );
  const { trainable, frozen } = partitionParams(params, /\.lora_[AB]\./);
  const lossOf = (scope: ParamScope, b: Record<string, Tensor>) =>
    o.mean(o.square(o.sub(net(scope, b["x"]!), b["y"]!)));
  const batch = { x: randn(new Rng(2), [4, 5], 1), y: randn(new Rng(3), [4, 3], 1) };
  const batchSpecs = { x: { shape: [4, 5] }, y: { shape: [4, 3] } };
  const withAdapter = await compileTrainStep(lossOf, batchSpecs, { frozen, lora: plan, ema: false });
  const plain = await compileTrainStep(lossOf, batchSpecs, { ema: false });
  const start = new Map(trainable); // (a state's maps are updated in place)
  const sA = withAdapter.initState(trainable);
  const sP = plain.initState(new Map(frozen));
  const lA = await withAdapter.step(sA, batch, 0.05);
  const lP = await plain.step(sP, batch, 0.05);
  assert.ok(
    Math.abs(lA.loss - lP.loss) <= 1e-6 * Math.max(1, lP.loss),
    `B = 0 gives the base loss: ${lA.loss} vs ${lP.loss}`,
  );
  await withAdapter.sync(sA);
  // the step's state holds only the adapter, and B moved from zero
  assert.deepEqual([...sA.params.keys()].sort(), [names.a, names.b].sort());
  assert.ok(
    sA.params.get(names.b)!.data.some((v) => v !== 0),
    "B moved",
  );
  const l2 = await withAdapter.step(sA, batch, 0.05);
  assert.ok(l2.loss < lA.loss, `loss fell: ${lA.loss} → ${l2.loss}`);
  // the base fed to each step instead of embedded: the same steps
  const fed = await compileTrainStep(lossOf, batchSpecs, {
    frozen,
    lora: plan,
    ema: false,
    frozenAs: "inputs",
  });
  const sF = fed.initState(start);
  assert.equal((await fed.step(sF, batch, 0.05)).loss, lA.loss);
  assert.equal((await fed.step(sF, batch, 0.05)).loss, l2.loss);
  withAdapter.dispose();
  plain.dispose();
  fed.dispose();
});

test("lora: the layers an adapter can join are the linears and convolutions, not the embedding tables", async () => {
  const te = CLIPTextModel.fromConfig({
    hidden_size: 32,
    intermediate_size: 37,
    num_hidden_layers: 1,
    num_attention_heads: 4,
    vocab_size: 99,
    max_position_embeddings: 16,
  });
  const teLayers = loraLayerNames(te.params);
  assert.ok(teLayers.includes("text_model.encoder.layers.0.self_attn.q_proj"));
  assert.ok(teLayers.includes("text_model.encoder.layers.0.mlp.fc1"));
  for (const l of ["text_model.embeddings.token_embedding", "text_model.embeddings.position_embedding"])
    assert.ok(te.params.has(`${l}.weight`) && !teLayers.includes(l), l);
  // the bundled class-conditional U-Net: its class label table is an embedding, its time MLP linears
  const mnist = await UNet2DModel.fromPretrained("assets/models/mnist/unet");
  const layers = loraLayerNames(mnist.params);
  assert.ok(mnist.params.has("class_embedding.weight") && !layers.includes("class_embedding"));
  assert.ok(layers.includes("time_embedding.linear_1") && layers.includes("conv_in"));
  // the embedding tables are all that is left out
  const rank24 = [...mnist.params].filter(
    ([k, v]) => k.endsWith(".weight") && [2, 4].includes(v.shape.length),
  );
  assert.equal(layers.length, rank24.length - 1);
});
