// An MM-DiT learns text to image: an SD3Transformer2DModel and its one CLIP text encoder (with
// projection), trained jointly from scratch with rectified flow (logit-normal t, SD3's shift) on the
// latents of a frozen VAE, make for each prompt the image the prompt names. Four emoji of four colours;
// the judge is the nearest real image, in the latent space, to what each prompt generates. The run's
// export is a StableDiffusion3Pipeline folder with one text encoder, loaded back by loadPipeline.
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { loadEmoji } from "../../src/data/emoji.ts";
import { sd3ConfigFromDiffusers } from "../../src/models/mmdit/config.ts";
import { sd3PositionTable } from "../../src/models/mmdit/mmdit.ts";
import { AutoencoderKL } from "../../src/models/vae/model.ts";
import { generate, toUnitRange } from "../../src/pipelines/generate.ts";
import { disposePipeline, loadPipeline } from "../../src/pipelines/pipeline-dir.ts";
import { schedulerFor } from "../../src/pipelines/scheduler-names.ts";
import { promptConditions } from "../../src/pipelines/text-to-image.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import { trainLogged } from "../support/train-run.ts";

const dir = mkdtempSync(join(tmpdir(), "diffuse-mmdit-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const COLOURS = ["red", "blue", "green", "yellow"];
const captions = (vendor: string) => COLOURS.map((c) => `large ${c} circle, ${vendor} style`);
const VAE = {
  _class_name: "AutoencoderKL",
  block_out_channels: [16, 16],
  down_block_types: ["DownEncoderBlock2D", "DownEncoderBlock2D"],
  up_block_types: ["UpDecoderBlock2D", "UpDecoderBlock2D"],
  layers_per_block: 1,
  norm_num_groups: 8,
  latent_channels: 4,
  sample_size: 16,
};
const MMDIT = {
  _class_name: "SD3Transformer2DModel",
  sample_size: 8,
  patch_size: 2,
  in_channels: 4,
  out_channels: 4,
  num_layers: 2,
  num_attention_heads: 2,
  attention_head_dim: 32,
  caption_projection_dim: 64,
  joint_attention_dim: 32,
  pooled_projection_dim: 32,
  pos_embed_max_size: 4,
};

test("a tiny MM-DiT learns to draw what each prompt names with rectified flow (loss falls; 4/4 prompts judged right)", async () => {
  const data = loadEmoji({ split: "all", size: 16 });
  const pick = (caps: string[]) => {
    const per = 3 * 16 * 16;
    const x = new Float32Array(caps.length * per);
    caps.forEach((c, k) => {
      const i = data.captions.indexOf(c);
      assert.ok(i >= 0, c);
      for (let j = 0; j < per; j++) x[k * per + j] = data.images[i * per + j]! * 2 - 1;
    });
    return new HostTensor<"float32">(x, [caps.length, 3, 16, 16]);
  };
  // a random VAE, its posterior made sharp and its scaling factor set for unit-variance latents (as text-learns)
  const probe = AutoencoderKL.fromConfig(VAE, { seed: 3 });
  const bias = probe.params.get("quant_conv.bias")!.data;
  for (let c = 4; c < 8; c++) bias[c] = -20;
  const z = (await probe.encode(pick(captions("twitter")))).mean;
  let ss = 0;
  for (const v of z.data) ss += v * v;
  const vae = AutoencoderKL.fromParams({ ...VAE, scaling_factor: 1 / Math.sqrt(ss / z.size) }, probe.params);
  probe.dispose();
  await vae.savePretrained(join(dir, "vae"));

  const config = {
    model: MMDIT,
    text_encoder: {
      architectures: ["CLIPTextModelWithProjection"],
      vocab_size: 600,
      hidden_size: 32,
      intermediate_size: 64,
      projection_dim: 32,
      num_hidden_layers: 2,
      num_attention_heads: 2,
      max_position_embeddings: 16,
      hidden_act: "quick_gelu",
    },
    tokenizer: { vocab_size: 600 },
    vae: { path: join(dir, "vae") },
    scheduler: { _class_name: "FlowMatchEulerDiscreteScheduler", num_train_timesteps: 1000, shift: 3.0 },
    data: {
      dataset: "emoji",
      size: 16,
      channels: 3,
      captions: [...captions("twitter"), ...captions("google").slice(0, 2)],
    },
    training: {
      steps: 400,
      batch_size: 6,
      lr: 2e-3,
      warmup_steps: 20,
      cond_dropout: 0.1,
      ema_decay: 0.99,
      timestep_sampling: "logit-normal",
    },
    output: { checkpoint_every: 400, sample_every: 0, log_every: 25, sample_steps: 10, sample_guidance: 3 },
  };
  const logs = await trainLogged(config, join(dir, "run"));
  const first = logs[0]!.loss;
  const last = logs.at(-1)!.loss;
  assert.ok(last < 0.6 * first, `loss falls: ${first.toFixed(3)} → ${last.toFixed(3)}`);

  // the export: a StableDiffusion3Pipeline folder with one CLIP (text_encoder_2 null), no T5 tokens,
  // and the position table a fresh model computes (a buffer: never trained)
  const model = join(dir, "run", "model");
  const index = JSON.parse(readFileSync(join(model, "model_index.json"), "utf8"));
  assert.equal(index._class_name, "StableDiffusion3Pipeline");
  assert.deepEqual(index.text_encoder, ["transformers", "CLIPTextModelWithProjection"]);
  assert.deepEqual(
    [index.text_encoder_2, index.text_encoder_3],
    [
      [null, null],
      [null, null],
    ],
  );
  assert.ok(!existsSync(join(model, "text_encoder_2")));
  const info = JSON.parse(readFileSync(join(model, "diffuse.json"), "utf8"));
  assert.equal(info.maxSequenceLength, 0);
  const pipe = await loadPipeline(model);
  try {
    assert.equal(pipe.pipelineClass, "StableDiffusion3Pipeline");
    const table = sd3PositionTable(sd3ConfigFromDiffusers(MMDIT));
    assert.deepEqual(pipe.denoiser.params.get("pos_embed.pos_embed")!.data, table.data);

    // judged in the latent space the transformer works in (as text-learns)
    const prompts = captions("twitter");
    const quarter = (z: HostTensor<"float32">) =>
      Promise.resolve(
        new HostTensor<"float32">(
          Float32Array.from(z.data, (v) => v / 4),
          z.shape,
        ),
      );
    const conditions = await promptConditions(pipe.text!, prompts);
    assert.deepEqual(conditions.cond.kind === "text" && conditions.cond.embeds.shape, [4, 16, 32]);
    const gen = await generate(pipe.denoiser, schedulerFor({ name: "flow-euler" }, pipe.schedulerConfig), {
      conditions,
      steps: 20,
      guidance: 3,
      seed: 0,
      size: 8,
      decode: quarter,
    });
    const real = (await vae.encode(pick(prompts))).mean;
    const refs = toUnitRange(
      await quarter(
        new HostTensor(
          Float32Array.from(real.data, (v) => v * vae.scalingFactor),
          real.shape,
        ),
      ),
    );
    const per = 4 * 8 * 8;
    const dist = (i: number, j: number) => {
      let d = 0;
      for (let k = 0; k < per; k++) d += (gen.data[i * per + k]! - refs.data[j * per + k]!) ** 2;
      return d;
    };
    const table2 = prompts.map((_, i) => prompts.map((__, j) => dist(i, j)));
    const judged = table2.map((ds) => ds.indexOf(Math.min(...ds)));
    assert.deepEqual(
      judged,
      [0, 1, 2, 3],
      `nearest reference of each prompt's latents: ${judged}; distances ${table2.map((r) => r.map((d) => d.toFixed(1)).join(" ")).join(" | ")}`,
    );
  } finally {
    disposePipeline(pipe);
    vae.dispose();
  }
});
