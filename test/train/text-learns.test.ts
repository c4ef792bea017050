// Text to image learns: the U-Net and its text encoder, trained jointly on the latents of a (frozen)
// VAE, make for each prompt the image the prompt names. Four emoji of four colours; the judge is the
// nearest real image, in the latent space, to what each prompt generates.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { loadEmoji } from "../../src/data/emoji.ts";
import { AutoencoderKL } from "../../src/models/vae/model.ts";
import { generate, toUnitRange } from "../../src/pipelines/generate.ts";
import { disposePipeline, loadPipeline } from "../../src/pipelines/pipeline-dir.ts";
import { schedulerFor } from "../../src/pipelines/scheduler-names.ts";
import { promptConditions } from "../../src/pipelines/text-to-image.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import { trainLogged } from "../support/train-run.ts";

const dir = mkdtempSync(join(tmpdir(), "diffuse-t2i-"));
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

test("a tiny text-to-image model learns to draw what each prompt names (loss falls; 4/4 prompts judged right)", async () => {
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
  // a random VAE, its posterior made sharp (log-variance bias −20, as a trained VAE's is small) and its
  // scaling factor set so that the latents are unit-variance (as training one would)
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
    model: {
      _class_name: "UNet2DConditionModel",
      in_channels: 4,
      out_channels: 4,
      block_out_channels: [32, 64],
      layers_per_block: 1,
      down_block_types: ["CrossAttnDownBlock2D", "DownBlock2D"],
      up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D"],
      norm_num_groups: 8,
      cross_attention_dim: 32,
      attention_head_dim: 2,
      sample_size: 8,
    },
    text_encoder: {
      architectures: ["CLIPTextModel"],
      vocab_size: 600,
      hidden_size: 32,
      intermediate_size: 64,
      num_hidden_layers: 1,
      num_attention_heads: 2,
      max_position_embeddings: 77,
      hidden_act: "quick_gelu",
    },
    tokenizer: { vocab_size: 600 },
    vae: { path: join(dir, "vae") },
    scheduler: {
      _class_name: "DDPMScheduler",
      num_train_timesteps: 1000,
      beta_schedule: "scaled_linear",
      beta_start: 0.00085,
      beta_end: 0.012,
      prediction_type: "v_prediction",
    },
    data: {
      dataset: "emoji",
      size: 16,
      channels: 3,
      // google's green and yellow circles are held out (never trained on)
      captions: [...captions("twitter"), ...captions("google").slice(0, 2)],
    },
    training: { steps: 300, batch_size: 6, lr: 2e-3, warmup_steps: 20, cond_dropout: 0.1, ema_decay: 0.99 },
    output: { checkpoint_every: 300, sample_every: 0, log_every: 25, sample_steps: 10, sample_guidance: 3 },
  };
  const logs = await trainLogged(config, join(dir, "run"));
  const first = logs[0]!.loss;
  const last = logs.at(-1)!.loss;
  assert.ok(last < 0.6 * first, `loss falls: ${first.toFixed(3)} → ${last.toFixed(3)}`);

  // judged in the latent space the U-Net works in (the random VAE's decoder would only blur the view):
  // each prompt's generated latents against the real images' scaled latents, both mapped by z/4
  const pipe = await loadPipeline(join(dir, "run", "model"));
  try {
    const prompts = captions("twitter");
    const quarter = (z: HostTensor<"float32">) =>
      Promise.resolve(
        new HostTensor<"float32">(
          Float32Array.from(z.data, (v) => v / 4),
          z.shape,
        ),
      );
    const gen = await generate(pipe.denoiser, schedulerFor({ name: "ddim" }, pipe.schedulerConfig), {
      conditions: await promptConditions(pipe.text!, prompts),
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
    const table = prompts.map((_, i) => prompts.map((__, j) => dist(i, j)));
    const judged = table.map((ds) => ds.indexOf(Math.min(...ds)));
    assert.deepEqual(
      judged,
      [0, 1, 2, 3],
      `nearest reference of each prompt's latents: ${judged}; distances ${table.map((r) => r.map((d) => d.toFixed(1)).join(" ")).join(" | ")}`,
    );
  } finally {
    disposePipeline(pipe);
    vae.dispose();
  }
});
