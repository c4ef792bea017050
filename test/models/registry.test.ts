/**
 * The model registry: every registered class round-trips its config (diffusers keys → typed → the
 * same keys), saves and loads back to identical outputs through `loadModel` (by `_class_name`), and
 * answers hostile configs and folders with errors that name the class, the key and what was expected.
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { type Conditioning, classCondition } from "../../src/diffusion/conditioning.ts";
import { writeSafetensors } from "../../src/io/safetensors.ts";
import { loadModel, modelFromConfig } from "../../src/models/load.ts";
import { DENOISER_CLASS_NAMES, resolveDenoiser } from "../../src/models/registry.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import { Rng } from "../../src/tensor/rng.ts";
import { TINY_DIT, TINY_SD3, TINY_UNET_ATTN, TINY_UNET_COND } from "../support/tiny-models.ts";

const tmp = mkdtempSync(join(tmpdir(), "diffuse-registry-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** A tiny config of each registered class (the test fails when a class is added without one). */
const TINY: Record<string, Record<string, unknown>> = {
  UNet2DModel: TINY_UNET_ATTN,
  DiTTransformer2DModel: { ...TINY_DIT, out_channels: 2 },
  UNet2DConditionModel: TINY_UNET_COND,
  SD3Transformer2DModel: TINY_SD3,
};

test("every registered class: config round trip; save → loadModel → identical outputs", async () => {
  assert.deepEqual(Object.keys(TINY).sort(), [...DENOISER_CLASS_NAMES].sort());
  for (const name of DENOISER_CLASS_NAMES) {
    const bound = resolveDenoiser(TINY[name]!);
    assert.equal(bound.className, name);
    // diffusers keys → typed → diffusers keys: a fixed point
    assert.deepEqual(resolveDenoiser(bound.config).config, bound.config);
    const model = modelFromConfig(TINY[name]!, { seed: 3 });
    // non-trivial weights (a DiT starts at zero output)
    const rng = new Rng(4);
    for (const [k, v] of model.params)
      model.params.set(k, new HostTensor(rng.normal(v.size, 0, 0.1), v.shape));
    const x = new HostTensor<"float32">(new Rng(5).normal(2 * 64), [2, 1, 8, 8]);
    const spec = bound.conditioning;
    const cond: Conditioning =
      spec.kind === "text"
        ? {
            kind: "text",
            embeds: new HostTensor(new Rng(6).normal(2 * 5 * spec.dim), [2, 5, spec.dim]),
            ...(spec.pooledDim
              ? { pooled: new HostTensor(new Rng(7).normal(2 * spec.pooledDim), [2, spec.pooledDim]) }
              : {}),
          }
        : classCondition([0, 2]);
    const y = await model.denoise(x, [3, 700], cond);
    assert.equal(y.shape[1], bound.geometry.outChannels, name);
    for (const dtype of ["F32", "F16"] as const) {
      const dir = join(tmp, `${name}-${dtype}`);
      await model.savePretrained(dir, { dtype });
      const back = await loadModel(dir);
      assert.equal(back.bound.className, name);
      const z = await back.denoise(x, [3, 700], cond);
      if (dtype === "F32") assert.deepEqual(z.data, y.data, `${name}: F32 round trip`);
      else {
        const err = Math.max(...z.toArray().map((v, i) => Math.abs(v - y.data[i]!)));
        assert.ok(err < 1e-2, `${name}: F16 round trip within half precision (${err})`);
      }
    }
  }
});

test("hostile configs: unknown or missing class names, bad values, foreign keys", () => {
  assert.throws(
    () => resolveDenoiser({ _class_name: "UNet3DModel" }),
    /"_class_name" "UNet3DModel" is not a denoiser diffuse supports; use one of UNet2DModel, DiTTransformer2DModel/,
  );
  assert.throws(() => resolveDenoiser({ _class_name: 7 }), /"_class_name" 7 is not a denoiser/);
  assert.throws(
    () => resolveDenoiser({ ...TINY["DiTTransformer2DModel"], num_layers: 0 }),
    /DiTTransformer2DModel config: "num_layers" is 0; use an integer ≥ 1/,
  );
  assert.throws(
    () => resolveDenoiser({ ...TINY["DiTTransformer2DModel"], cross_attention_dim: 64 }),
    /"cross_attention_dim" belong to a text-conditioned transformer/,
  );
  assert.throws(
    () => resolveDenoiser({ ...TINY["UNet2DModel"], norm_num_groups: 3 }),
    /UNet2DModel config: "norm_num_groups" is 3/,
  );
  assert.throws(
    () => resolveDenoiser({ ...TINY["UNet2DModel"], block_out_channels: "big" }),
    /"block_out_channels" is "big"; use a non-empty list/,
  );
});

test("hostile folders: missing weights, wrong shapes, extra tensors, bad JSON, a pipeline folder passed as a model", async () => {
  const dit = modelFromConfig(TINY["DiTTransformer2DModel"]!);
  const dir = join(tmp, "hostile");
  await dit.savePretrained(dir);
  const weights = new Map(dit.params);
  weights.delete("proj_out_2.bias");
  writeSafetensors(join(dir, "diffusion_pytorch_model.safetensors"), weights);
  await assert.rejects(
    loadModel(dir),
    /DiTTransformer2DModel .*the weights do not fit the config: missing "proj_out_2\.bias"/,
  );
  weights.set("proj_out_2.bias", new HostTensor(new Float32Array(3), [3]));
  writeSafetensors(join(dir, "diffusion_pytorch_model.safetensors"), weights);
  await assert.rejects(
    loadModel(dir),
    /tensor "proj_out_2\.bias" has shape \[3\], but the config needs \[8\]/,
  );
  weights.set("proj_out_2.bias", dit.params.get("proj_out_2.bias")!);
  weights.set("extra.weight", new HostTensor(new Float32Array(1), [1]));
  writeSafetensors(join(dir, "diffusion_pytorch_model.safetensors"), weights);
  await assert.rejects(loadModel(dir), /unexpected "extra\.weight"/);
  writeFileSync(join(dir, "config.json"), "{ not json");
  await assert.rejects(loadModel(dir), /config\.json is not valid JSON/);
  writeFileSync(join(dir, "config.json"), JSON.stringify({ _class_name: "AutoencoderTiny" }));
  await assert.rejects(loadModel(dir), /"AutoencoderTiny" is not a denoiser diffuse supports/);
  const pipe = join(tmp, "pipe");
  mkdirSync(join(pipe, "transformer"), { recursive: true });
  await dit.savePretrained(join(pipe, "transformer"));
  await assert.rejects(loadModel(pipe), /has no config\.json/);
  await assert.rejects(loadModel(join(tmp, "missing")), /no folder at/);
  assert.equal(
    JSON.parse(readFileSync(join(pipe, "transformer", "config.json"), "utf8"))._class_name,
    "DiTTransformer2DModel",
  );
});
