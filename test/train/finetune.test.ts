// diffuse finetune on a tiny text-to-image pipeline: DreamBooth with LoRA moves what the instance
// prompt generates towards the instance images while the class prompt keeps drawing what the base
// drew (prior preservation), only the adapters are trained, the LoRA file loads into the base;
// full fine-tuning writes a pipeline; bad inputs are refused with the reason.
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { after, before, test } from "node:test";
import { UsageError } from "../../src/cli/args.ts";
import { run as finetune } from "../../src/cli/finetune.ts";
import { loadCaptionFolder } from "../../src/data/caption-folder.ts";
import { writePng } from "../../src/io/png.ts";
import { readSafetensors } from "../../src/io/safetensors.ts";
import { loadLoraWeights } from "../../src/models/lora/index.ts";
import { disposePipeline, type LoadedPipeline, loadPipeline } from "../../src/pipelines/pipeline-dir.ts";
import { promptConditions } from "../../src/pipelines/text-to-image.ts";
import { Scheduler } from "../../src/samplers/scheduler.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import { Rng } from "../../src/tensor/rng.ts";
import { quietly } from "../support/quiet.ts";
import { makeTinySd } from "../support/tiny-sd.ts";

let sd: string;
let root: string;
let images: string;
before(async () => {
  sd = await makeTinySd();
  root = dirname(sd);
  // the subject: a red square on white, five times
  images = join(root, "subject");
  mkdirSync(images);
  for (let k = 0; k < 5; k++) {
    const px = new Uint8Array(16 * 16 * 3).fill(255);
    for (let y = 4 + (k % 2); y < 12; y++)
      for (let x = 4; x < 12; x++) px.set([220, 30, 30], (y * 16 + x) * 3);
    writePng(join(images, `red-${k}.png`), { width: 16, height: 16, channels: 3, data: px });
  }
});
after(() => rmSync(root, { recursive: true, force: true }));

const INSTANCE = "a zwx square";
const CLASS = "a blue square in the corner";

/**
 * How well a pipeline denoises images for a prompt: the ε-prediction error on their scaled latents at
 * 12 noise levels across the schedule, with noise drawn from a seed training never used.
 */
async function denoisingError(
  pipe: LoadedPipeline,
  images: HostTensor<"float32">,
  prompt: string,
): Promise<number> {
  const vae = pipe.vae!;
  const z = (
    await vae.encode(
      new HostTensor(
        Float32Array.from(images.data, (v) => v * 2 - 1),
        images.shape,
      ),
    )
  ).mean;
  const per = z.size / z.shape[0]!;
  const ac = Scheduler.fromConfig(pipe.schedulerConfig).alphasCumprod!;
  const ts = Array.from({ length: 12 }, (_, i) => Math.floor(((i + 0.5) * ac.length) / 12));
  const n = ts.length * z.shape[0]!;
  const eps = new Rng(987).normal(n * per);
  const xt = new Float32Array(n * per);
  const tAll: number[] = [];
  for (let k = 0; k < n; k++) {
    const t = ts[k % ts.length]!;
    tAll.push(t);
    const img = Math.floor(k / ts.length);
    const a = Math.sqrt(ac[t]!);
    const s = Math.sqrt(1 - ac[t]!);
    for (let j = 0; j < per; j++)
      xt[k * per + j] = a * z.data[img * per + j]! * vae.scalingFactor + s * eps[k * per + j]!;
  }
  const { cond } = await promptConditions(
    pipe.text!,
    Array.from({ length: n }, () => prompt),
  );
  const y = await pipe.denoiser.denoise(new HostTensor(xt, [n, ...z.shape.slice(1)]), tAll, cond);
  let e = 0;
  for (let i = 0; i < y.size; i++) e += (y.data[i]! - eps[i]!) ** 2;
  return e / y.size;
}

test("DreamBooth with LoRA: the instance prompt learns the subject, the class prompt holds, only adapters train", async (t) => {
  const out = join(root, "db");
  await quietly(() =>
    finetune([
      "--model",
      sd,
      "--data",
      images,
      "--instance-prompt",
      INSTANCE,
      "--class-prompt",
      CLASS,
      "--class-images",
      "4",
      "--rank",
      "4",
      "--steps",
      "160",
      "--batch-size",
      "4",
      "--lr",
      "1e-2",
      "--set",
      "output.sample_every=80",
      "--set",
      "output.checkpoint_every=80",
      "--out",
      out,
    ]),
  );
  const loraFile = join(out, "model", "pytorch_lora_weights.safetensors");
  assert.ok(existsSync(loraFile));
  assert.ok(existsSync(join(out, "samples", "step-000160.png")));
  assert.equal(
    readFileSync(join(out, "class_images", "metadata.jsonl"), "utf8")
      .trim()
      .split("\n").length,
    4,
  );
  // the checkpoint holds the adapters alone: the base was frozen
  const ckpt = readSafetensors(join(out, "checkpoint", "unet_lora", "adapter.safetensors")).tensors;
  assert.ok(ckpt.size > 0 && [...ckpt.keys()].every((k) => /\.lora_[AB]\.default\.weight$/.test(k)));

  const subject = loadCaptionFolder(images, { size: 16, prompt: INSTANCE });
  const classSet = loadCaptionFolder(join(out, "class_images"), { size: 16 });
  const asTensor = (d: typeof subject) => new HostTensor<"float32">(d.images, [d.count, 3, 16, 16]);
  const pipe = await loadPipeline(sd);
  try {
    const inst0 = await denoisingError(pipe, asTensor(subject), INSTANCE);
    const class0 = await denoisingError(pipe, asTensor(classSet), CLASS);
    const report = await loadLoraWeights(pipe, loraFile);
    assert.ok((report.layers["unet"] ?? 0) > 0);
    const inst1 = await denoisingError(pipe, asTensor(subject), INSTANCE);
    const class1 = await denoisingError(pipe, asTensor(classSet), CLASS);
    t.diagnostic(
      `ε error: instance ${inst0.toFixed(3)} → ${inst1.toFixed(3)}, class ${class0.toFixed(3)} → ${class1.toFixed(3)}`,
    );
    assert.ok(
      inst1 < 0.75 * inst0,
      `the instance prompt learns the subject: ε error ${inst0.toFixed(3)} → ${inst1.toFixed(3)}`,
    );
    assert.ok(
      class1 < 1.05 * class0,
      `the class prompt holds: ε error ${class0.toFixed(3)} → ${class1.toFixed(3)}`,
    );
  } finally {
    disposePipeline(pipe);
  }
});

test("full fine-tuning writes a whole pipeline that loads, with the weights changed", async () => {
  const out = join(root, "full");
  await quietly(() =>
    finetune([
      "--model",
      sd,
      "--data",
      images,
      "--instance-prompt",
      INSTANCE,
      "--method",
      "full",
      "--steps",
      "20",
      "--batch-size",
      "2",
      "--set",
      "output.sample_every=0",
      "--set",
      "output.checkpoint_every=20",
      "--out",
      out,
    ]),
  );
  const tuned = await loadPipeline(join(out, "model"));
  const base = await loadPipeline(sd);
  try {
    const k = "conv_in.weight";
    assert.notDeepEqual(tuned.denoiser.params.get(k)!.data, base.denoiser.params.get(k)!.data);
    // the text encoder was not trained: identical
    for (const [name, v] of base.text!.textEncoder.params)
      assert.deepEqual(tuned.text!.textEncoder.params.get(name)!.data, v.data, name);
  } finally {
    disposePipeline(tuned);
    disposePipeline(base);
  }
});

test("diffuse finetune refuses what it cannot do, with the reason", async () => {
  const cli = (argv: string[]) => quietly(() => finetune(argv));
  await assert.rejects(
    cli(["--data", images]),
    (e: Error) => e instanceof UsageError && /--model DIR/.test(e.message),
  );
  await assert.rejects(cli(["--model", sd]), /--data FOLDER/);
  await assert.rejects(cli(["--model", sd, "--data", join(root, "nope")]), /does not exist/);
  await assert.rejects(
    cli(["--model", sd, "--data", images, "--class-prompt", "a dog"]),
    /needs --instance-prompt/,
  );
  await assert.rejects(cli(["--model", "mnist", "--data", images]), /adapts text-to-image pipelines/);
  await assert.rejects(
    cli(["--model", sd, "--data", images, "--method", "dora"]),
    /--method must be lora or full/,
  );
  // images without captions and no instance prompt
  await assert.rejects(
    cli(["--model", sd, "--data", images, "--steps", "1", "--out", join(root, "nocap")]),
    /has no caption: list it in .*metadata\.jsonl/,
  );
});
