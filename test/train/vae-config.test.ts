/**
 * The autoencoder run config (train/vae-config.ts): defaults filled in, and every bad field answered
 * with its name, what is allowed and what was given.
 * Plus the host-side pieces of the objective: the adaptive GAN weight and the PSNR.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { ConfigFieldError } from "../../src/train/config.ts";
import { isVaeRunConfig, resolveVaeTrainConfig } from "../../src/train/vae-config.ts";
import { psnr } from "../../src/train/vae-eval.ts";
import { adaptiveGanWeight } from "../../src/train/vae-objective.ts";

const MODEL = {
  _class_name: "AutoencoderKL",
  block_out_channels: [32, 64],
  down_block_types: ["DownEncoderBlock2D", "DownEncoderBlock2D"],
  up_block_types: ["UpDecoderBlock2D", "UpDecoderBlock2D"],
};

test("vae config: defaults (LDM's recipe, scaled down); a run config is told by its model class", () => {
  const c = resolveVaeTrainConfig({ model: MODEL });
  assert.equal(c.data.dataset, "emoji");
  assert.equal(c.training.reconstruction, "l1");
  assert.equal(c.training.kl_weight, 1e-6);
  assert.deepEqual([c.training.adam_beta1, c.training.adam_beta2], [0.5, 0.9]);
  assert.equal(c.training.disc_start, null);
  assert.ok(isVaeRunConfig({ model: MODEL }));
  assert.ok(!isVaeRunConfig({ model: { _class_name: "UNet2DModel" } }));
});

test("vae config: bad fields are named with what is allowed", () => {
  const bad: [Record<string, unknown>, RegExp][] = [
    [{ model: MODEL, training: { lr: -1 } }, /"training.lr" must be a number in \[0, 1\], got -1/],
    [{ model: MODEL, training: { lrr: 1 } }, /unknown config field "training.lrr"; known fields: steps/],
    [{ model: MODEL, scheduler: {} }, /unknown config section "scheduler" for an AutoencoderKL run/],
    [{ model: MODEL, data: { size: 63 } }, /"data.size" must be a multiple of 2 .* got 63/],
    [
      { model: MODEL, data: { dataset: "mnist", size: 32 } },
      /in_channels and out_channels must be 1 for mnist/,
    ],
    [{ model: MODEL, data: { dataset: "folder" } }, /"data.path" must be a folder path/],
    [{ model: MODEL, data: { size: 16 }, training: { disc_start: 0, disc_layers: 3 } }, /at most 2/],
    [{ model: MODEL, training: { reconstruction: "l3" } }, /"training.reconstruction" must be "l1" or "l2"/],
    [
      { model: { ...MODEL, norm_num_groups: 5 } },
      /config field "model": AutoencoderKL config: "norm_num_groups" is 5/,
    ],
    [{ data: {} }, /config needs a "model" object/],
    [
      { model: MODEL, training: { trainable: "decoder" } },
      /"training.trainable" is "decoder", which keeps the encoder of training.init_from: set training.init_from/,
    ],
    [{ model: MODEL, training: { trainable: "encoder" } }, /"training.trainable" must be "all" or "decoder"/],
    [
      { model: MODEL, training: { init_from: "" } },
      /"training.init_from" must be a folder path or a bundled model's name/,
    ],
  ];
  for (const [cfg, msg] of bad)
    assert.throws(
      () => resolveVaeTrainConfig(cfg),
      (e: Error) => e instanceof ConfigFieldError && msg.test(e.message),
    );
});

test("vae objective: the adaptive weight and the PSNR", () => {
  assert.ok(Math.abs(adaptiveGanWeight(2, 1 - 1e-4, 0.5) - 1) < 1e-12);
  assert.equal(adaptiveGanWeight(1, 0, 1), 1e4);
  assert.equal(adaptiveGanWeight(Number.NaN, 1, 1), 0);
  const x = Float32Array.of(-1, 0, 1, 0.5);
  assert.equal(psnr(x, x), 100);
  // an error of 0.2 in [−1, 1] is 0.1 on [0, 1]: MSE 0.01 → 20 dB
  assert.ok(Math.abs(psnr(Float32Array.of(0, 0), Float32Array.of(0.2, -0.2)) - 20) < 1e-5);
});
