/**
 * Pipeline folders: a DDPMPipeline folder laid out as diffusers' `save_pretrained` writes it (the
 * unet2d-a fixture's U-Net, diffusers' own DDPMScheduler config, no diffuse.json) loads and generates;
 * DDPMPipeline and DiTPipeline folders written by diffuse round-trip with identical generations; bad
 * model_index.json files are refused with the reason.
 */
import assert from "node:assert/strict";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { modelFromConfig } from "../../src/models/load.ts";
import { generate } from "../../src/pipelines/generate.ts";
import { loadPipeline, savePipeline } from "../../src/pipelines/pipeline-dir.ts";
import { schedulerFor } from "../../src/pipelines/scheduler-names.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import { Rng } from "../../src/tensor/rng.ts";
import { TINY_DIT, TINY_UNET_ATTN } from "../support/tiny-models.ts";

const tmp = mkdtempSync(join(tmpdir(), "diffuse-pipes-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** DDPMScheduler's config as diffusers 0.40 `save_config` writes it (every key). */
const DDPM_SCHEDULER = {
  _class_name: "DDPMScheduler",
  _diffusers_version: "0.40.0.dev0",
  beta_end: 0.02,
  beta_schedule: "linear",
  beta_start: 0.0001,
  clip_sample: true,
  clip_sample_range: 1.0,
  dynamic_thresholding_ratio: 0.995,
  num_train_timesteps: 1000,
  prediction_type: "epsilon",
  rescale_betas_zero_snr: false,
  sample_max_value: 1.0,
  steps_offset: 0,
  thresholding: false,
  timestep_spacing: "leading",
  trained_betas: null,
  variance_type: "fixed_small",
};

test("a DDPMPipeline folder as diffusers writes it loads and generates", async () => {
  const dir = join(tmp, "ddpm-diffusers");
  mkdirSync(join(dir, "scheduler"), { recursive: true });
  cpSync("test/fixtures/unet2d-a/model", join(dir, "unet"), { recursive: true });
  writeFileSync(join(dir, "scheduler", "scheduler_config.json"), JSON.stringify(DDPM_SCHEDULER, null, 2));
  writeFileSync(
    join(dir, "model_index.json"),
    JSON.stringify({
      _class_name: "DDPMPipeline",
      _diffusers_version: "0.40.0.dev0",
      scheduler: ["diffusers", "DDPMScheduler"],
      unet: ["diffusers", "UNet2DModel"],
    }),
  );
  const pipe = await loadPipeline(dir);
  assert.equal(pipe.pipelineClass, "DDPMPipeline");
  assert.equal(pipe.denoiser.bound.className, "UNet2DModel");
  assert.equal(pipe.info.numClasses, 10); // num_class_embeds 11, the last is "no class"
  const images = await generate(pipe.denoiser, schedulerFor({ name: "ddim" }, pipe.schedulerConfig), {
    labels: [1, 7],
    steps: 2,
    guidance: 2,
  });
  assert.deepEqual(images.shape, [2, 1, 16, 16]);
  assert.ok(images.toArray().every((v) => v >= 0 && v <= 1));
});

test("DDPMPipeline and DiTPipeline folders written by diffuse round-trip to identical generations", async () => {
  const configs = [TINY_UNET_ATTN, TINY_DIT];
  const flow = { _class_name: "FlowMatchEulerDiscreteScheduler", num_train_timesteps: 1000, shift: 1 };
  for (const cfg of configs) {
    const model = modelFromConfig(cfg, { seed: 1 });
    const rng = new Rng(2);
    for (const [k, v] of model.params)
      model.params.set(k, new HostTensor(rng.normal(v.size, 0, 0.1), v.shape));
    const dir = join(tmp, cfg._class_name);
    await savePipeline(dir, model, flow, {
      numClasses: 3,
      sampling: { scheduler: "flow-euler", steps: 3, guidance: 1.5 },
    });
    const index = JSON.parse(readFileSync(join(dir, "model_index.json"), "utf8"));
    const component = cfg._class_name === "UNet2DModel" ? "unet" : "transformer";
    assert.equal(index._class_name, cfg._class_name === "UNet2DModel" ? "DDPMPipeline" : "DiTPipeline");
    assert.deepEqual(index[component], ["diffusers", cfg._class_name]);
    const pipe = await loadPipeline(dir);
    assert.deepEqual(pipe.info.sampling, { scheduler: "flow-euler", steps: 3, guidance: 1.5 });
    const opts = { labels: [0, 2], steps: 3, guidance: 1.5, seed: 4 };
    const a = await generate(model, schedulerFor({ name: "flow-euler" }, flow), opts);
    const b = await generate(pipe.denoiser, schedulerFor({ name: "flow-euler" }, pipe.schedulerConfig), opts);
    assert.deepEqual(b.data, a.data, cfg._class_name);
  }
});

test("bad model_index.json files are refused with the reason", async () => {
  const base = join(tmp, "DiTTransformer2DModel");
  const bad = (name: string, index: unknown) => {
    const dir = join(tmp, `bad-${name}`);
    cpSync(base, dir, { recursive: true });
    writeFileSync(join(dir, "model_index.json"), JSON.stringify(index));
    return dir;
  };
  await assert.rejects(
    loadPipeline(bad("cls", { _class_name: "KandinskyPipeline" })),
    /pipeline "KandinskyPipeline" is not one diffuse can load; supported: DDPMPipeline, DiTPipeline/,
  );
  await assert.rejects(
    loadPipeline(
      bad("comp", {
        _class_name: "DiTPipeline",
        transformer: ["diffusers", "DiTTransformer2DModel"],
        text_encoder: ["transformers", "CLIPTextModel"],
      }),
    ),
    /component "text_encoder" is not one a DiTPipeline folder holds/,
  );
  await assert.rejects(
    loadPipeline(
      bad("cls2", { _class_name: "DiTPipeline", transformer: ["diffusers", "PixArtTransformer2DModel"] }),
    ),
    /"PixArtTransformer2DModel" is not a denoiser diffuse supports/,
  );
  await assert.rejects(loadPipeline(bad("json", "nope")), /must hold a JSON object/);
  await assert.rejects(loadPipeline(join(tmp, "nothing-here")), /neither a folder nor a bundled model/);
});
