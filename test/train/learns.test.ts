/**
 * A short real training run in CI: a small class-conditional U-Net on MNIST must lower the denoising
 * loss well below where it starts, and its exported model must load and sample. (Sample quality is
 * judged in the benchmark run, not here: at CI's budget of steps on this CPU the digits are not yet
 * readable — a 300-step run sampled at chance accuracy — so a classifier check would only add minutes.)
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { generate } from "../../src/pipelines/generate.ts";
import { loadPipeline } from "../../src/pipelines/pipeline-dir.ts";
import { schedulerFor } from "../../src/pipelines/scheduler-names.ts";
import { type TrainEvent, trainRun } from "../../src/train/trainer.ts";

const tmp = mkdtempSync(join(tmpdir(), "diffuse-learn-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const STEPS = 150;
const config = {
  model: {
    _class_name: "UNet2DModel",
    sample_size: 32,
    in_channels: 1,
    out_channels: 1,
    block_out_channels: [16, 32, 32],
    layers_per_block: 1,
    down_block_types: ["DownBlock2D", "DownBlock2D", "DownBlock2D"],
    up_block_types: ["UpBlock2D", "UpBlock2D", "UpBlock2D"],
    norm_num_groups: 8,
    num_class_embeds: 11,
    flip_sin_to_cos: true,
    freq_shift: 0,
  },
  scheduler: { _class_name: "DDPMScheduler", num_train_timesteps: 1000, beta_schedule: "linear" },
  data: { dataset: "mnist", size: 32 },
  training: { steps: STEPS, batch_size: 32, lr: 3e-3, warmup_steps: 30, ema_decay: 0.98, seed: 0 },
  output: { checkpoint_every: STEPS, sample_every: 0, log_every: 25, sample_steps: 10 },
};

test(`${STEPS} training steps lower the loss; the exported model samples`, async () => {
  const out = join(tmp, "run");
  const logs: { step: number; loss: number }[] = [];
  await trainRun(
    { config, outDir: out },
    {
      post: (e: TrainEvent) => {
        if (e.kind === "log") logs.push({ step: e.step, loss: e.loss });
      },
      signal: new AbortController().signal,
    },
  );
  const first = logs[0]!.loss;
  const last = logs[logs.length - 1]!.loss;
  assert.ok(last < 0.5 * first, `loss ${first.toFixed(3)} → ${last.toFixed(3)} did not halve`);

  const pipe = await loadPipeline(out);
  const images = await generate(pipe.unet, schedulerFor({ name: "ddim" }, pipe.schedulerConfig), {
    labels: [0, 1, 2, 3],
    numClasses: pipe.info.numClasses,
    steps: 4,
    guidance: 3,
    seed: 1,
  });
  assert.deepEqual(images.shape, [4, 1, 32, 32]);
  assert.ok(images.data.every((v) => v >= 0 && v <= 1));
});
