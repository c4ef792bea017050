/**
 * Model configs are held to limits before anything is built: each size field has a sanity bound, and
 * the parameters a config implies (estimated from its fields) a limit callers can raise. A hostile
 * config (`layers_per_block: 1000000`) fails at once with the field and its bound — in
 * `fromPretrained`, `fromConfig` and `diffuse sample` — instead of tracing a network for minutes.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { run as sample } from "../../src/cli/sample.ts";
import {
  ConfigError,
  DEFAULT_MODEL_LIMITS,
  parseFields,
  setModelLimits,
} from "../../src/models/config-fields.ts";
import { DIT_SCHEMA, ditConfigFromDiffusers, ditParamEstimate } from "../../src/models/dit/config.ts";
import { ditParamSpecs } from "../../src/models/dit/dit.ts";
import { DiTTransformer2DModel } from "../../src/models/dit/model.ts";
import { loadModel } from "../../src/models/load.ts";
import { SD3Transformer2DModel } from "../../src/models/mmdit/model.ts";
import { CLIPTextModel } from "../../src/models/text/clip-text-model.ts";
import { UNET2D_SCHEMA, unetConfigFromDiffusers, unetParamEstimate } from "../../src/models/unet/config.ts";
import { UNet2DModel } from "../../src/models/unet/model.ts";
import { unetParamSpecs } from "../../src/models/unet/unet.ts";
import { unetCondConfigFromDiffusers, unetCondParamEstimate } from "../../src/models/unet-cond/config.ts";
import { UNet2DConditionModel } from "../../src/models/unet-cond/model.ts";
import { unetCondParamSpecs } from "../../src/models/unet-cond/unet-cond.ts";
import { vaeConfigFromDiffusers, vaeParamEstimate } from "../../src/models/vae/config.ts";
import { AutoencoderKL } from "../../src/models/vae/model.ts";
import { vaeParamSpecs } from "../../src/models/vae/vae.ts";
import { savePipeline } from "../../src/pipelines/pipeline-dir.ts";
import { quietly } from "../support/quiet.ts";
import { TINY_DIT, TINY_UNET_ATTN, TINY_UNET_COND } from "../support/tiny-models.ts";

const tmp = mkdtempSync(join(tmpdir(), "diffuse-limits-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const count = (specs: readonly { shape: readonly number[] }[]) =>
  specs.reduce((a, s) => a + s.shape.reduce((p, q) => p * q, 1), 0);
const fixture = (path: string) =>
  JSON.parse(readFileSync(new URL(`../fixtures/${path}`, import.meta.url), "utf8")) as Record<
    string,
    unknown
  >;

/** Runs f and checks it failed within `ms` with a message matching `re`. */
async function failsFast(f: () => unknown, re: RegExp, ms = 3000): Promise<void> {
  const t0 = performance.now();
  await assert.rejects(async () => f(), re);
  const took = performance.now() - t0;
  assert.ok(took < ms, `took ${took.toFixed(0)} ms`);
}

test("a hostile size fails at once, naming the field and its bound", async () => {
  const dir = join(tmp, "unet");
  await UNet2DModel.fromConfig(TINY_UNET_ATTN).savePretrained(dir);
  const hostile = (patch: Record<string, unknown>) =>
    writeFileSync(join(dir, "config.json"), JSON.stringify({ ...TINY_UNET_ATTN, ...patch }));
  hostile({ layers_per_block: 1_000_000 });
  const bound = /"layers_per_block" is 1000000; use an integer ≥ 1, at most 128/;
  await failsFast(() => UNet2DModel.fromPretrained(dir), bound);
  await failsFast(() => loadModel(dir), bound);
  hostile({ sample_size: 1e6 });
  await failsFast(
    () => UNet2DModel.fromPretrained(dir),
    /"sample_size" is 1000000; use an integer ≥ 1, at most 4096/,
  );
  hostile({ block_out_channels: Array(100).fill(8) });
  await failsFast(
    () => UNet2DModel.fromPretrained(dir),
    /"block_out_channels" is .*; use a list of at most 8 entries/,
  );
  await failsFast(
    () => DiTTransformer2DModel.fromConfig({ ...TINY_DIT, num_layers: 1e6 }),
    /"num_layers" is 1000000; use an integer ≥ 1, at most 128/,
  );
  await failsFast(
    () => DiTTransformer2DModel.fromConfig({ ...TINY_DIT, sample_size: 4096, patch_size: 1 }),
    /"sample_size" is 4096; use at most 128 × patch_size \(128\)/,
  );
  await failsFast(
    () => UNet2DConditionModel.fromConfig({ ...TINY_UNET_COND, transformer_layers_per_block: 1e6 }),
    /"transformer_layers_per_block" is 1000000; use an integer ≥ 1, at most 128/,
  );
  await failsFast(
    () => AutoencoderKL.fromConfig({ layers_per_block: 1e6 }),
    /"layers_per_block" is 1000000; use an integer ≥ 1, at most 128/,
  );
});

test("the parameters a config implies are held to a limit that callers can raise", async () => {
  const huge = {
    block_out_channels: [8192, 8192, 8192, 8192],
    layers_per_block: 8,
    down_block_types: Array(4).fill("DownBlock2D"),
    up_block_types: Array(4).fill("UpBlock2D"),
  };
  const over =
    /UNet2DModel config: block_out_channels \[8192,8192,8192,8192\], layers_per_block 8, num_class_embeds null imply about [\d.]+ billion parameters \([\d.]+ billion bytes of float32 weights\), over the limit of 4\.00 billion; use smaller values, or raise the limit \(maxParams\)/;
  await failsFast(() => UNet2DModel.fromConfig(huge), over, 1000);
  // raised for one parse, the same config is accepted (and nothing is built)
  const c = parseFields(UNET2D_SCHEMA, huge, { maxParams: 1e12 });
  assert.equal(c.layersPerBlock, 8);
  // or for the process
  const before = setModelLimits({ maxParams: 1000 });
  try {
    assert.deepEqual(before, DEFAULT_MODEL_LIMITS);
    assert.throws(() => UNet2DModel.fromConfig(TINY_UNET_ATTN), /over the limit of 1,000/);
    assert.throws(() => parseFields(DIT_SCHEMA, TINY_DIT), /num_layers 1, .* over the limit of 1,000/);
  } finally {
    setModelLimits(before);
  }
  assert.doesNotThrow(() => UNet2DModel.fromConfig(TINY_UNET_ATTN));
  assert.throws(() => setModelLimits({ maxParams: Number.NaN }), ConfigError);
  // or for one model, as an option of its constructors
  const tight = { limits: { maxParams: 1000 } };
  assert.throws(() => UNet2DModel.fromConfig(TINY_UNET_ATTN, tight), /over the limit of 1,000/);
  assert.throws(
    () => AutoencoderKL.fromConfig({ block_out_channels: [8], norm_num_groups: 4 }, tight),
    /over the limit of 1,000/,
  );
  const dir = join(tmp, "limited");
  await UNet2DModel.fromConfig(TINY_UNET_ATTN).savePretrained(dir);
  await assert.rejects(UNet2DModel.fromPretrained(dir, tight), /over the limit of 1,000/);
  await assert.rejects(loadModel(dir, tight), /over the limit of 1,000/);
  const low = setModelLimits({ maxParams: 1000 });
  try {
    const roomy = { limits: { maxParams: 1e6 } };
    assert.ok((await UNet2DModel.fromPretrained(dir, roomy)).numParams > 1000);
    assert.ok(AutoencoderKL.fromConfig({ block_out_channels: [8], norm_num_groups: 4 }, roomy));
  } finally {
    setModelLimits(low);
  }
});

test("the estimates are within 10% of the traced parameter counts", () => {
  const close = (what: string, est: number, real: number) =>
    assert.ok(Math.abs(est / real - 1) < 0.1, `${what}: estimate ${est}, traced ${real}`);
  for (const json of [{}, fixture("unet-configs/unet-mnist.json"), TINY_UNET_ATTN]) {
    const c = unetConfigFromDiffusers(json);
    close("UNet2DModel", unetParamEstimate(c), count(unetParamSpecs(c)));
  }
  for (const json of [{}, fixture("unet2d-cond/model/config.json"), TINY_UNET_COND]) {
    const c = unetCondConfigFromDiffusers(json);
    close("UNet2DConditionModel", unetCondParamEstimate(c), count(unetCondParamSpecs(c)));
  }
  for (const json of [{}, fixture("dit/model/config.json")]) {
    const c = ditConfigFromDiffusers(json);
    close("DiTTransformer2DModel", ditParamEstimate(c), count(ditParamSpecs(c)));
  }
  for (const json of [{}, fixture("vae-kl/model/config.json")]) {
    const c = vaeConfigFromDiffusers(json);
    close("AutoencoderKL", vaeParamEstimate(c), count(vaeParamSpecs(c)));
  }
});

test("diffuse sample refuses a hostile model folder at once, naming the file and the field", async () => {
  const dir = join(tmp, "pipe");
  await savePipeline(
    dir,
    UNet2DModel.fromConfig(TINY_UNET_ATTN),
    { _class_name: "DDPMScheduler" },
    {
      numClasses: 3,
    },
  );
  const path = join(dir, "unet", "config.json");
  writeFileSync(path, JSON.stringify({ ...TINY_UNET_ATTN, layers_per_block: 1_000_000 }));
  await failsFast(
    () => quietly(() => sample(["--model", dir, "--out", join(tmp, "out")])),
    /unet[/\\]config\.json: UNet2DModel config: "layers_per_block" is 1000000; use an integer ≥ 1, at most 128/,
  );
});

test("SD3 and CLIP text configs with absurd depths are refused at once (the fuzzer's hangs)", () => {
  const t0 = performance.now();
  assert.throws(
    () => SD3Transformer2DModel.fromConfig({ num_layers: 2 ** 31 }),
    /"num_layers" is 2147483648; .*at most 128/,
  );
  assert.throws(() => SD3Transformer2DModel.fromConfig({ num_layers: 1e21 }), /num_layers/);
  assert.throws(
    () => CLIPTextModel.fromConfig({ num_hidden_layers: 1e15 }),
    /"num_hidden_layers" is 1000000000000000; .*at most 128/,
  );
  assert.ok(performance.now() - t0 < 2000);
});
