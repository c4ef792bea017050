/**
 * StableDiffusionControlNetPipeline folders and generation with a control image, on a tiny random
 * Stable Diffusion pipeline and a ControlNet made from its U-Net: the folder round trip (diffusers'
 * layout, controlnet/ beside unet/), the one-graph controlled U-Net against the two models run apart
 * (per-sample scales, guess mode), scale 0 and a fresh (zero-convolution) ControlNet giving exactly the
 * plain pipeline's images, and `diffuse sample --control` (images written, control named in the
 * parameters, clear refusals).
 */
import assert from "node:assert/strict";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { after, before, test } from "node:test";
import { UsageError } from "../../src/cli/args.ts";
import { run as evalCli } from "../../src/cli/eval.ts";
import { run } from "../../src/cli/sample.ts";
import { encodePng } from "../../src/io/png.ts";
import { readSafetensors } from "../../src/io/safetensors.ts";
import { ControlledDenoiser } from "../../src/models/controlnet/controlled.ts";
import { ControlNetModel } from "../../src/models/controlnet/model.ts";
import type { UNet2DConditionModel } from "../../src/models/unet-cond/model.ts";
import {
  disposePipeline,
  type LoadedPipeline,
  loadPipeline,
  saveTextToImagePipeline,
} from "../../src/pipelines/pipeline-dir.ts";
import { type ControlRequest, pipelineGenerate } from "../../src/pipelines/run.ts";
import { schedulerFor } from "../../src/pipelines/scheduler-names.ts";
import { promptConditions } from "../../src/pipelines/text-to-image.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import { Rng } from "../../src/tensor/rng.ts";
import { quietly } from "../support/quiet.ts";
import { makeTinySd, TINY_SD_CAPTIONS } from "../support/tiny-sd.ts";

let sd: string;
let root: string;
let cnDir: string;
let freshDir: string;
const SIZE = 16; // the tiny pipeline's images (8×8 latents, VAE factor 2)

/** A ControlNet from the U-Net whose zero convolutions are made random (so it steers). */
function steering(unet: UNet2DConditionModel, seed: number): ControlNetModel {
  const cn = ControlNetModel.fromUnet(unet, { conditioningEmbeddingOutChannels: [8, 16], seed });
  const rng = new Rng(seed);
  for (const [k, v] of cn.params) {
    if (/^controlnet_(down_blocks|mid_block)|^controlnet_cond_embedding\.conv_out/.test(k))
      cn.params.set(k, new HostTensor(rng.normal(v.size, 0, 0.2), v.shape));
  }
  return cn;
}

async function saveWith(pipe: LoadedPipeline, dir: string, cn: ControlNetModel): Promise<void> {
  await saveTextToImagePipeline(dir, {
    unet: pipe.denoiser,
    textEncoder: pipe.text!.textEncoder,
    tokenizer: pipe.text!.tokenizer,
    vae: pipe.vae!,
    schedulerConfig: pipe.schedulerConfig,
    info: pipe.info,
    controlnet: cn,
  });
}

before(async () => {
  sd = await makeTinySd();
  root = dirname(sd);
  cnDir = join(root, "tiny-sd-controlnet");
  freshDir = join(root, "tiny-sd-fresh-controlnet");
  const pipe = await loadPipeline(sd);
  try {
    const unet = pipe.denoiser as UNet2DConditionModel;
    await saveWith(pipe, cnDir, steering(unet, 5));
    await saveWith(
      pipe,
      freshDir,
      ControlNetModel.fromUnet(unet, { conditioningEmbeddingOutChannels: [8, 16] }),
    );
  } finally {
    disposePipeline(pipe);
  }
  // a control image: a white square outline on black
  const img = new Float32Array(3 * SIZE * SIZE);
  for (let c = 0; c < 3; c++)
    for (let y = 3; y < 13; y++)
      for (let x = 3; x < 13; x++)
        if (y === 3 || y === 12 || x === 3 || x === 12) img[c * SIZE * SIZE + y * SIZE + x] = 1;
  control = new HostTensor(img, [1, 3, SIZE, SIZE]);
});
after(() => rmSync(root, { recursive: true, force: true }));

let control: HostTensor<"float32">;
const prompt = TINY_SD_CAPTIONS[0]!;
const gen = (p: LoadedPipeline, c?: ControlRequest, guidance = 3) =>
  pipelineGenerate(p, schedulerFor({ name: "ddim" }, p.schedulerConfig), {
    prompts: [prompt, TINY_SD_CAPTIONS[1]!],
    steps: 2,
    guidance,
    seed: 0,
    ...(c ? { control: c } : {}),
  });
const maxDiff = (a: HostTensor, b: HostTensor) => {
  assert.deepEqual(a.shape, b.shape);
  let m = 0;
  for (let i = 0; i < a.size; i++) m = Math.max(m, Math.abs(Number(a.data[i]) - Number(b.data[i])));
  return m;
};

test("a StableDiffusionControlNetPipeline folder round trips: model_index.json names the ControlNet, its weights come back", async () => {
  const index = JSON.parse(readFileSync(join(cnDir, "model_index.json"), "utf8")) as Record<string, unknown>;
  assert.equal(index["_class_name"], "StableDiffusionControlNetPipeline");
  assert.deepEqual(index["controlnet"], ["diffusers", "ControlNetModel"]);
  assert.deepEqual(index["unet"], ["diffusers", "UNet2DConditionModel"]);
  const pipe = await loadPipeline(cnDir);
  const base = await loadPipeline(sd);
  try {
    assert.equal(pipe.pipelineClass, "StableDiffusionControlNetPipeline");
    assert.ok(pipe.controlnet && pipe.text && pipe.vae);
    assert.equal(base.controlnet, undefined);
    const again = steering(base.denoiser as UNet2DConditionModel, 5);
    for (const [k, v] of again.params) assert.deepEqual(pipe.controlnet.params.get(k)!.data, v.data, k);
    assert.deepEqual(pipe.controlnet.config.conditioningEmbeddingOutChannels, [8, 16]);
    // and written again from the loaded pipeline: the same files
    const copy = join(root, "copy");
    await saveWith(pipe, copy, pipe.controlnet);
    const a = readSafetensors(join(cnDir, "controlnet", "diffusion_pytorch_model.safetensors")).tensors;
    const b = readSafetensors(join(copy, "controlnet", "diffusion_pytorch_model.safetensors")).tensors;
    assert.deepEqual([...a.keys()], [...b.keys()]);
  } finally {
    disposePipeline(pipe);
    disposePipeline(base);
  }
});

test("a ControlNet that does not fit the U-Net is refused when the folder loads", async () => {
  const bad = join(root, "bad");
  const pipe = await loadPipeline(sd);
  try {
    const other = ControlNetModel.fromConfig({
      block_out_channels: [16, 32],
      down_block_types: ["CrossAttnDownBlock2D", "DownBlock2D"],
      layers_per_block: 1,
      norm_num_groups: 8,
      cross_attention_dim: 32,
      attention_head_dim: 2,
      conditioning_embedding_out_channels: [8, 16],
    });
    await saveWith(pipe, bad, other);
  } finally {
    disposePipeline(pipe);
  }
  await assert.rejects(loadPipeline(bad), /ControlNet in controlnet\/ does not fit the U-Net.*fromUnet/);
});

test("the one-graph controlled U-Net equals the ControlNet and the U-Net run apart (per-sample scales, guess mode)", async () => {
  const pipe = await loadPipeline(cnDir);
  try {
    const unet = pipe.denoiser as UNet2DConditionModel;
    const cn = pipe.controlnet!;
    const { cond } = await promptConditions(pipe.text!, [prompt, prompt]);
    if (cond.kind !== "text") throw new Error("unreachable");
    const rng = new Rng(3);
    const x = new HostTensor<"float32">(rng.normal(2 * 4 * 8 * 8), [2, 4, 8, 8]);
    const img = new HostTensor<"float32">(rng.uniform(2 * 3 * SIZE * SIZE), [2, 3, SIZE, SIZE]);
    const d = new ControlledDenoiser(unet, cn);
    try {
      for (const guessMode of [false, true]) {
        const got = await d.denoise(x, 500, { ...cond, control: { image: img, scale: [0, 0.7], guessMode } });
        const r = await cn.forward(x, 500, {
          encoderHiddenStates: cond.embeds,
          controlnetCond: img,
          conditioningScale: 0.7,
          guessMode,
        });
        const steered = await unet.forward(x, 500, {
          encoderHiddenStates: cond.embeds,
          downBlockAdditionalResiduals: r.downBlockResSamples,
          midBlockAdditionalResidual: r.midBlockResSample,
        });
        const plain = await unet.forward(x, 500, { encoderHiddenStates: cond.embeds });
        const half = got.size / 2;
        const rel = (a: Float32Array, b: Float32Array) => {
          let m = 0;
          let ref = 0;
          for (let i = 0; i < a.length; i++) {
            m = Math.max(m, Math.abs(a[i]! - b[i]!));
            ref = Math.max(ref, Math.abs(b[i]!));
          }
          return m / ref;
        };
        const g = got.data as Float32Array;
        assert.ok(rel(g.subarray(0, half), plain.data.subarray(0, half) as Float32Array) < 1e-5, "scale 0");
        const s1 = rel(g.subarray(half), steered.data.subarray(half) as Float32Array);
        assert.ok(s1 < 1e-4, `scale 0.7, guess mode ${guessMode}: ${s1}`);
        assert.ok(rel(g.subarray(half), plain.data.subarray(half) as Float32Array) > 1e-3, "it steers");
      }
    } finally {
      d.dispose();
    }
  } finally {
    disposePipeline(pipe);
  }
});

test("control at scale 0 and a fresh ControlNet (zero convolutions) give the plain pipeline's images; a trained one steers", async () => {
  const base = await loadPipeline(sd);
  const pipe = await loadPipeline(cnDir);
  const fresh = await loadPipeline(freshDir);
  try {
    const plain = await gen(base);
    assert.ok(maxDiff(await gen(pipe), plain) < 1e-6, "no control: the U-Net alone");
    assert.ok(maxDiff(await gen(pipe, { image: control, scale: 0 }), plain) < 1e-5, "scale 0");
    assert.ok(maxDiff(await gen(fresh, { image: control, scale: 1 }), plain) < 1e-5, "zero convolutions");
    assert.ok(
      maxDiff(await gen(fresh, { image: control, scale: 1, guessMode: true }), plain) < 1e-5,
      "guess mode too",
    );
    const steered = await gen(pipe, { image: control, scale: 1 });
    assert.ok(maxDiff(steered, plain) > 1e-3, "a ControlNet that is not zero steers");
    const guessed = await gen(pipe, { image: control, scale: 1, guessMode: true });
    assert.ok(maxDiff(guessed, steered) > 1e-4, "guess mode differs");
    // one control image per image equals one for all
    const both = new Float32Array([...control.data, ...control.data]);
    const two = new HostTensor<"float32">(both, [2, 3, SIZE, SIZE]);
    assert.ok(maxDiff(await gen(pipe, { image: two, scale: 1 }), steered) < 1e-6);
    // guidance 1: the conditional half alone
    assert.equal((await gen(pipe, { image: control, scale: 0.5 }, 1)).shape[0], 2);
    await assert.rejects(gen(base, { image: control }), /without a ControlNet/);
    await assert.rejects(
      gen(pipe, { image: new HostTensor(new Float32Array(3 * 8 * 8), [1, 3, 8, 8]) }),
      /control image must be float32 \[1 or 2, 3, 16, 16\]/,
    );
    await assert.rejects(
      gen(pipe, { image: new HostTensor(new Float32Array(3 * 3 * 16 * 16), [3, 3, 16, 16]) }),
      /3 control images for 2 images/,
    );
  } finally {
    disposePipeline(base);
    disposePipeline(pipe);
    disposePipeline(fresh);
  }
});

const sample = (model: string, out: string, ...extra: string[]) =>
  quietly(() =>
    run([
      "--model",
      model,
      "--prompt",
      prompt,
      "--per-prompt",
      "2",
      "--steps",
      "2",
      "--scheduler",
      "ddim",
      "--out",
      out,
      ...extra,
    ]),
  );

test("diffuse sample --control IMAGE --control-scale S: the library's images, control named in the parameters; clear refusals", async () => {
  // the control image as a 32×32 PNG (resized to the model's 16×16 on the way in)
  const side = 32;
  const raster = new Uint8Array(side * side * 3);
  for (let y = 0; y < side; y++)
    for (let x = 0; x < side; x++)
      if (y >= 6 && y < 26 && x >= 6 && x < 26 && (y < 8 || y >= 24 || x < 8 || x >= 24))
        raster.fill(255, (y * side + x) * 3, (y * side + x + 1) * 3);
  const png = join(root, "control.png");
  writeFileSync(png, encodePng({ width: side, height: side, channels: 3, data: raster }));
  const out = join(root, "cli");
  await sample(cnDir, out, "--control", png, "--control-scale", "0.8");
  const st = readSafetensors(join(out, "samples.safetensors"));
  const images = st.tensors.get("images")!;
  assert.deepEqual(images.shape, [2, 3, SIZE, SIZE]);
  assert.match(st.metadata["parameters"]!, /control: .*control\.png:0\.8/);
  const { readControlImage } = await import("../../src/cli/sample.ts");
  const pipe = await loadPipeline(cnDir);
  try {
    const want = await pipelineGenerate(pipe, schedulerFor({ name: "ddim" }, pipe.schedulerConfig), {
      prompts: [prompt, prompt],
      steps: 2,
      guidance: 3,
      seed: 0,
      control: { image: readControlImage(png, SIZE), scale: 0.8 },
    });
    assert.ok(maxDiff(images, want) < 1e-6, "the CLI's images are the library's");
  } finally {
    disposePipeline(pipe);
  }
  await sample(cnDir, join(root, "guess"), "--control", png, "--guess-mode");
  assert.match(
    readSafetensors(join(root, "guess", "samples.safetensors")).metadata["parameters"]!,
    /control: .*:1 \(guess mode\)/,
  );

  await assert.rejects(sample(sd, join(root, "x"), "--control", png), (e: Error) => {
    assert.ok(e instanceof UsageError);
    assert.match(e.message, /--control: .* without a ControlNet/);
    return true;
  });
  const notImage = join(root, "notes.txt");
  writeFileSync(notImage, "not an image");
  await assert.rejects(
    sample(cnDir, join(root, "x"), "--control", notImage),
    /--control: cannot read .*not a PNG or JPEG/,
  );
  await assert.rejects(
    sample(cnDir, join(root, "x"), "--control", join(root, "missing.png")),
    /--control: cannot read .*missing\.png/,
  );
  await assert.rejects(sample(cnDir, join(root, "x"), "--control-scale", "0.5"), /go with --control IMAGE/);
  await assert.rejects(
    sample(cnDir, join(root, "x"), "--control", png, "--control-scale", "11"),
    /--control-scale/,
  );
});

test("diffuse eval --control refuses a pipeline without a ControlNet and one that does not make emoji", async () => {
  await assert.rejects(evalCli(["--control"]), /--control scores a ControlNet pipeline: pass --model DIR/);
  await assert.rejects(evalCli(["--model", sd, "--control"]), /--control: .* without a ControlNet/);
  await assert.rejects(
    evalCli(["--model", cnDir, "--control"]),
    /held-out emoji \(64×64\).*makes 16×16 images/,
  );
});
