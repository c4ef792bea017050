// The model export is atomic (issue 21 item 7): a training process killed while it writes model/ — in
// the middle of the files, or between the two renames that swap the new folder in — leaves the previous
// export whole (its diffuse.json's trainedSteps and its weights from the same step), and the resumed
// run writes the export and the preview grid of the step it was killed at, ending bit-identical to
// an uninterrupted run.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { recoverReplacedDir } from "../../src/io/atomic.ts";
import { exportedStep, samplesPath, trainRun } from "../../src/train/trainer.ts";
import { trainVae } from "../../src/train/vae-trainer.ts";

const tmp = mkdtempSync(join(tmpdir(), "diffuse-export-atomic-"));
after(() => rmSync(tmp, { recursive: true, force: true }));
const child = fileURLToPath(new URL("../support/kill-at-write.ts", import.meta.url));

const config = {
  model: {
    _class_name: "UNet2DModel",
    sample_size: 28,
    in_channels: 1,
    out_channels: 1,
    block_out_channels: [8, 8],
    layers_per_block: 1,
    down_block_types: ["DownBlock2D", "DownBlock2D"],
    up_block_types: ["UpBlock2D", "UpBlock2D"],
    norm_num_groups: 4,
    num_class_embeds: 11,
  },
  scheduler: { _class_name: "DDPMScheduler", num_train_timesteps: 1000, beta_schedule: "linear" },
  data: { dataset: "mnist", size: 28 },
  training: { steps: 6, batch_size: 4, lr: 1e-3, warmup_steps: 0, seed: 5, threads: 1 },
  output: { checkpoint_every: 2, sample_every: 2, log_every: 1, sample_steps: 2 },
};
const ctx = { post: () => {}, signal: new AbortController().signal };
const modelWeights = (run: string) =>
  createHash("sha256")
    .update(readFileSync(join(run, "model", "unet", "diffusion_pytorch_model.safetensors")))
    .digest("hex");

/** The exported model's weights after 2, 4 and 6 steps of the uninterrupted run. */
const reference = new Map<number, string>();
before(async () => {
  const run = join(tmp, "reference");
  for (const step of [2, 4, 6]) {
    await trainRun({ config, outDir: run, stopAfter: 2 }, ctx);
    assert.equal(exportedStep(join(run, "model")), step);
    reference.set(step, modelWeights(run));
  }
});

/** Trains in a child process that kills itself at the Nth matching call. */
function killedAt(
  run: string,
  call: "open" | "rename",
  pattern: string,
  nth: number,
  kind: "denoiser" | "vae" = "denoiser",
  cfg: object = config,
): void {
  const r = spawnSync(
    process.execPath,
    ["--import", "tsx", child, kind, JSON.stringify(cfg), run, call, pattern, String(nth)],
    { encoding: "utf8", timeout: 120_000 },
  );
  assert.equal(
    r.signal,
    "SIGKILL",
    `the child was to be killed at its write; status ${r.status}: ${r.stderr}`,
  );
}

/** What a reader of model/ sees: a whole export whose diffuse.json names the step of its weights. */
function assertConsistent(run: string, step: number): void {
  assert.equal(exportedStep(join(run, "model")), step);
  assert.equal(modelWeights(run), reference.get(step), `model/ weights are not those of step ${step}`);
}

async function resumeAndCheck(run: string): Promise<void> {
  await trainRun({ config, outDir: run }, ctx);
  assertConsistent(run, 6);
  for (const s of [2, 4, 6]) assert.ok(existsSync(samplesPath(run, s)), `samples of step ${s} missing`);
  assert.deepEqual(
    readdirSync(run).filter((n) => n.includes(".tmp-") || n.includes(".old-")),
    [],
    "leftover temporary folders",
  );
  const steps = readFileSync(join(run, "metrics.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => (JSON.parse(l) as { step: number }).step);
  assert.deepEqual(steps, [1, 2, 3, 4, 5, 6]);
}

test("killed while writing model/'s files: the previous export stays whole; the resume finishes the step", async () => {
  const run = join(tmp, "mid-files");
  // the second export (step 4), after its weights and before its diffuse.json
  killedAt(run, "open", String.raw`[/\\]model(\.tmp-[0-9a-f]+)?[/\\]\.diffuse\.json\.tmp-`, 2);
  assertConsistent(run, 2);
  assert.equal(existsSync(samplesPath(run, 4)), false);
  await resumeAndCheck(run);
});

test("killed between the renames that swap model/ in: the previous export is put back whole", async () => {
  const run = join(tmp, "mid-swap");
  // the second export's second rename (model.tmp-… → model), model/ already moved aside
  killedAt(run, "rename", String.raw`[/\\]model$`, 2);
  recoverReplacedDir(join(run, "model"));
  assertConsistent(run, 2);
  await resumeAndCheck(run);
});

test("an autoencoder run killed while writing model/ keeps its previous export whole", async () => {
  const run = join(tmp, "vae");
  const vae = {
    model: {
      _class_name: "AutoencoderKL",
      in_channels: 1,
      out_channels: 1,
      block_out_channels: [8, 8],
      down_block_types: ["DownEncoderBlock2D", "DownEncoderBlock2D"],
      up_block_types: ["UpDecoderBlock2D", "UpDecoderBlock2D"],
      layers_per_block: 1,
      latent_channels: 2,
      norm_num_groups: 4,
      sample_size: 28,
    },
    data: { dataset: "mnist", size: 28, holdout: 8 },
    training: { steps: 2, batch_size: 4, lr: 1e-3, warmup_steps: 0, scaling_samples: 8, threads: 1 },
    output: { checkpoint_every: 1000, eval_every: 0, log_every: 1, sample_count: 2 },
  };
  await trainVae(vae, { runDir: run });
  const files = () =>
    ["config.json", "diffusion_pytorch_model.safetensors"].map((f) =>
      createHash("sha256")
        .update(readFileSync(join(run, "model", f)))
        .digest("hex"),
    );
  const before = files();
  const more = { ...vae, training: { ...vae.training, steps: 4 } };
  // the new export's weights, after its config.json (a new scaling_factor) was written
  killedAt(
    run,
    "open",
    String.raw`[/\\]model(\.tmp-[0-9a-f]+)?[/\\]\.diffusion_pytorch_model\.safetensors\.tmp-`,
    1,
    "vae",
    more,
  );
  recoverReplacedDir(join(run, "model"));
  assert.deepEqual(files(), before, "model/ changed: the killed export was not atomic");
  const res = await trainVae(more, { runDir: run });
  assert.equal(res.step, 4);
  assert.notDeepEqual(files(), before);
});
