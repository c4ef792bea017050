/**
 * UNet2DModel against diffusers: the unet2d-a fixture (a tiny diffusers v0.40 checkpoint with its
 * inputs and outputs), the variant fixtures (options unet2d-a does not use, computed by the PyTorch
 * reference shared/bench/unet2d.py), parameter names and counts, the savePretrained/fromPretrained
 * round trip and the errors of a bad folder or bad inputs.
 */
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { readSafetensors, writeSafetensors } from "../../src/io/safetensors.ts";
import { UNet2DModel } from "../../src/models/unet/index.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import { maxRel } from "../support/allclose.ts";

const FIX = "test/fixtures/unet2d-a";
const MODEL = join(FIX, "model");
const tmp = mkdtempSync(join(tmpdir(), "diffuse-unet2d-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const fixtureModel = UNet2DModel.fromPretrained(MODEL);

test("unet2d-a: both calls reproduce diffusers within 1e-4", async (t) => {
  const unet = await fixtureModel;
  const inputs = readSafetensors(join(FIX, "inputs.safetensors")).tensors;
  const outputs = readSafetensors(join(FIX, "outputs.safetensors")).tensors;
  const calls = JSON.parse(readFileSync(join(FIX, "case.json"), "utf8")).calls as { id: string }[];
  assert.equal(calls.length, 2);
  for (const { id } of calls) {
    const sample = inputs.get(`${id}.sample`) as HostTensor<"float32">;
    // call1 passed a plain Python int, call0 a tensor of one timestep per sample.
    const timestep = id === "call1" ? 250 : inputs.get(`${id}.timestep`)!;
    const y = await unet.forward(sample, timestep, { classLabels: inputs.get(`${id}.class_labels`)! });
    const ref = outputs.get(`${id}.sample`)!;
    assert.deepEqual(y.shape, ref.shape);
    const rel = maxRel(y.data, ref.data as Float32Array);
    t.diagnostic(`${id}: max|a−b|/max|ref| = ${rel.toExponential(2)}`);
    assert.ok(rel <= 1e-4, `${id}: relative error ${rel}`);
  }
});

test("unet2d-a: parameter names, order and shapes equal diffusers' state dict", async () => {
  const unet = await fixtureModel;
  const keys = readFileSync(join(FIX, "weight_keys.txt"), "utf8")
    .trim()
    .split("\n")
    .map((l) => l.split("\t"));
  assert.deepEqual(
    [...unet.params.keys()],
    keys.map((k) => k[0]),
  );
  for (const [name, , shape] of keys) assert.deepEqual(unet.params.get(name!)!.shape, JSON.parse(shape!));
  assert.equal(unet.numParams, 702753);
  assert.equal(unet.params.size, 145);
  // A fresh model of the same config has the same names.
  const fresh = UNet2DModel.fromConfig(unet.config);
  assert.deepEqual([...fresh.params.keys()], [...unet.params.keys()]);
});

test("unet2d-a: config.json maps both ways unchanged", async () => {
  const unet = await fixtureModel;
  const json = JSON.parse(readFileSync(join(MODEL, "config.json"), "utf8"));
  assert.deepEqual(unet.config, json);
});

test("bench configs build with their parameter counts", () => {
  for (const [name, count] of [
    ["unet-mnist", 1_624_577],
    ["unet-rgb32", 6_475_011],
  ] as const) {
    const json = JSON.parse(readFileSync(`test/fixtures/unet-configs/${name}.json`, "utf8"));
    const unet = UNet2DModel.fromConfig(json, { seed: 1 });
    assert.equal(unet.numParams, count, name);
    assert.deepEqual(unet.config, json, `${name}: config round trip`);
  }
});

test("variants: scale_shift, head widths, attn norm groups, no mid block, mid without attention", async (t) => {
  for (const name of ["scale-shift", "heads-groups", "no-mid", "mid-no-attn"]) {
    const dir = `test/fixtures/unet-configs/variants/${name}`;
    const unet = await UNet2DModel.fromPretrained(dir);
    const io = readSafetensors(join(dir, "io.safetensors")).tensors;
    const labels = io.get("class_labels");
    const y = await unet.forward(
      io.get("sample") as HostTensor<"float32">,
      io.get("timestep")!,
      labels ? { classLabels: labels } : {},
    );
    const rel = maxRel(y.data, io.get("out")!.data as Float32Array);
    t.diagnostic(`${name}: ${rel.toExponential(2)}`);
    assert.ok(rel <= 1e-4, `${name}: relative error ${rel}`);
  }
});

test("forward: timestep as a number, a list or a tensor; {data, shape} samples", async () => {
  const unet = await fixtureModel;
  const x = HostTensor.full([2, 1, 16, 16], 0.1);
  const a = await unet.forward(x, 250, { classLabels: [1, 2] });
  const b = await unet.forward({ data: x.data, shape: x.shape }, [250, 250], { classLabels: [1, 2] });
  const c = await unet.forward(x, new HostTensor(BigInt64Array.of(250n), []), {
    classLabels: HostTensor.int64([1, 2]),
  });
  assert.deepEqual(b.data, a.data);
  assert.deepEqual(c.data, a.data);
});

test("savePretrained → fromPretrained: F32 exact, F16 close", async () => {
  const unet = await fixtureModel;
  const x = HostTensor.full([1, 1, 16, 16], -0.3);
  const ref = await unet.forward(x, 7, { classLabels: [3] });

  const d32 = join(tmp, "f32");
  await unet.savePretrained(d32);
  const header = readSafetensors(join(d32, "diffusion_pytorch_model.safetensors"));
  assert.deepEqual(header.metadata, { format: "pt" });
  const back = await UNet2DModel.fromPretrained(d32);
  assert.deepEqual(back.config, unet.config);
  const saved = JSON.parse(readFileSync(join(d32, "config.json"), "utf8"));
  assert.equal(saved._class_name, "UNet2DModel");
  assert.equal(typeof saved._diffusers_version, "string");
  for (const [k, v] of unet.params) assert.deepEqual(back.params.get(k)!.data, v.data, k);
  assert.deepEqual((await back.forward(x, 7, { classLabels: [3] })).data, ref.data);

  const d16 = join(tmp, "f16");
  await unet.savePretrained(d16, { dtype: "F16", variant: "fp16" });
  await assert.rejects(UNet2DModel.fromPretrained(d16), /it has diffusion_pytorch_model\.fp16\.safetensors/);
  const f16 = readSafetensors(join(d16, "diffusion_pytorch_model.fp16.safetensors"));
  assert.ok([...f16.dtypes.values()].every((d) => d === "F16"));
  const half = await UNet2DModel.fromPretrained(d16, { variant: "fp16" });
  for (const [k, v] of unet.params) {
    const w = half.params.get(k)!.data;
    for (let i = 0; i < v.size; i++) {
      assert.ok(Math.abs(w[i]! - v.data[i]!) <= 2 ** -11 * Math.abs(v.data[i]!) + 1e-7, k);
    }
  }
  const rel = maxRel((await half.forward(x, 7, { classLabels: [3] })).data, ref.data);
  assert.ok(rel < 1e-2, `F16 relative error ${rel}`);
});

test("fromPretrained renames old attention keys (query/key/value/proj_attn)", async () => {
  const unet = await fixtureModel;
  const dir = join(tmp, "legacy");
  mkdirSync(dir);
  copyFileSync(join(MODEL, "config.json"), join(dir, "config.json"));
  const old = new Map<string, HostTensor>();
  const names: Record<string, string> = {
    to_q: "query",
    to_k: "key",
    to_v: "value",
    "to_out.0": "proj_attn",
  };
  for (const [k, v] of unet.params) {
    old.set(
      k.replace(
        /\.attentions\.(\d+)\.(to_q|to_k|to_v|to_out\.0)\./,
        (_, i, p) => `.attentions.${i}.${names[p]}.`,
      ),
      v,
    );
  }
  assert.ok(old.has("mid_block.attentions.0.proj_attn.weight"));
  writeSafetensors(join(dir, "diffusion_pytorch_model.safetensors"), old);
  const back = await UNet2DModel.fromPretrained(dir);
  assert.deepEqual([...back.params.keys()], [...unet.params.keys()]);
  for (const [k, v] of unet.params) assert.deepEqual(back.params.get(k)!.data, v.data, k);
});

test("fromPretrained: clear errors for missing folders, files and mismatched weights", async () => {
  await assert.rejects(UNet2DModel.fromPretrained(join(tmp, "nope")), /no folder at .*nope/);
  const empty = join(tmp, "empty");
  mkdirSync(empty);
  await assert.rejects(UNet2DModel.fromPretrained(empty), /has no config\.json/);
  copyFileSync(join(MODEL, "config.json"), join(empty, "config.json"));
  await assert.rejects(UNet2DModel.fromPretrained(empty), /has no diffusion_pytorch_model\.safetensors/);
  writeFileSync(join(empty, "diffusion_pytorch_model.bin"), "");
  await assert.rejects(UNet2DModel.fromPretrained(empty), /PyTorch pickle.*convert it to safetensors/);

  const unet = await fixtureModel;
  const bad = new Map<string, HostTensor>(unet.params);
  bad.set("conv_in.weight", HostTensor.zeros([32, 2, 3, 3]));
  writeSafetensors(join(empty, "diffusion_pytorch_model.safetensors"), bad);
  await assert.rejects(
    UNet2DModel.fromPretrained(empty),
    /"conv_in\.weight" has shape \[32, 2, 3, 3\], but the config needs \[32, 1, 3, 3\]/,
  );
  bad.delete("conv_in.weight");
  bad.set("conv_in.extra", HostTensor.zeros([1]));
  writeSafetensors(join(empty, "diffusion_pytorch_model.safetensors"), bad);
  await assert.rejects(
    UNet2DModel.fromPretrained(empty),
    /missing "conv_in\.weight"; unexpected "conv_in\.extra"/,
  );

  writeFileSync(join(empty, "config.json"), JSON.stringify({ act_fn: "gelu" }));
  await assert.rejects(
    UNet2DModel.fromPretrained(empty),
    /config\.json: .*"act_fn" is "gelu"; use "silu" or "swish"/,
  );
  writeFileSync(join(empty, "config.json"), "{ not json");
  await assert.rejects(UNet2DModel.fromPretrained(empty), /config\.json is not valid JSON/);
});

test("forward: clear errors for bad inputs", async () => {
  const unet = await fixtureModel;
  const x = HostTensor.zeros([2, 1, 16, 16]);
  await assert.rejects(unet.forward(x, 1), /class-conditional; pass \{ classLabels \}/);
  await assert.rejects(unet.forward(x, [1, 2, 3], { classLabels: [0, 1] }), /3 timesteps for a batch of 2/);
  await assert.rejects(unet.forward(x, 1, { classLabels: [0, 11] }), /class label 11 is outside 0\.\.10/);
  await assert.rejects(unet.forward(x, 1, { classLabels: [0] }), /must hold 2 values/);
  await assert.rejects(
    unet.forward(HostTensor.zeros([1, 1, 15, 16]), 1, { classLabels: [0] }),
    /multiples of 2/,
  );
  await assert.rejects(
    unet.forward(HostTensor.zeros([1, 3, 16, 16]), 1, { classLabels: [0] }),
    /\[N, 1, H, W\]/,
  );
  const plain = UNet2DModel.fromConfig({ ...unet.config, num_class_embeds: null });
  await assert.rejects(plain.forward(x, 1, { classLabels: [0, 1] }), /no class embedding/);
});
