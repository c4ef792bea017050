// LoRA in a text-to-image pipeline: one file with U-Net and text-encoder parts loads into both
// models, `diffuse sample --lora FILE[:SCALE]` applies it (scale 0 is the base model, the CLI's
// images are the library's), and bad --lora values are refused with the reason.
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { after, before, test } from "node:test";
import { UsageError } from "../../src/cli/args.ts";
import { run } from "../../src/cli/sample.ts";
import { readSafetensors } from "../../src/io/safetensors.ts";
import {
  type LoraLayer,
  type LoraModel,
  loadLoraWeights,
  loraLayerNames,
  parseLoraSpec,
  saveLoraWeights,
} from "../../src/models/lora/index.ts";
import { loraTargets, TEXT_LORA_TARGETS, UNET_LORA_TARGETS } from "../../src/nn/lora.ts";
import { disposePipeline, type LoadedPipeline, loadPipeline } from "../../src/pipelines/pipeline-dir.ts";
import { pipelineGenerate } from "../../src/pipelines/run.ts";
import { schedulerFor } from "../../src/pipelines/scheduler-names.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import { Rng } from "../../src/tensor/rng.ts";
import { quietly } from "../support/quiet.ts";
import { makeTinySd, TINY_SD_CAPTIONS } from "../support/tiny-sd.ts";

let sd: string;
let root: string;
let lora: string;
before(async () => {
  sd = await makeTinySd();
  root = dirname(sd);
  // a random rank-2 adapter on the attention projections of the U-Net and the text encoder
  const pipe = await loadPipeline(sd);
  const rng = new Rng(11);
  const randomAdapter = (m: LoraModel, targets: readonly string[]) => {
    const match = loraTargets(targets);
    const layers = new Map<string, LoraLayer>();
    for (const l of loraLayerNames(m.params).filter(match)) {
      const w = m.params.get(`${l}.weight`)!;
      const [out, ...rest] = w.shape as [number, ...number[]];
      const a = rng.normal(2 * rest.reduce((x, y) => x * y, 1), 0, 0.3);
      const b = rng.normal(out * 2, 0, 0.3);
      layers.set(l, { a: new HostTensor(a, [2, ...rest]), b: new HostTensor(b, [out, 2]), alpha: 4 });
    }
    m.lora.add("style", layers);
    return layers.size;
  };
  assert.ok(randomAdapter(pipe.denoiser as unknown as LoraModel, UNET_LORA_TARGETS) > 0);
  assert.ok(randomAdapter(pipe.text!.textEncoder as unknown as LoraModel, TEXT_LORA_TARGETS) > 0);
  lora = join(root, "style.safetensors");
  saveLoraWeights(lora, pipe, "style");
  disposePipeline(pipe);
});
after(() => rmSync(root, { recursive: true, force: true }));

const prompt = TINY_SD_CAPTIONS[0]!;
const gen = (p: LoadedPipeline) =>
  pipelineGenerate(p, schedulerFor({ name: "ddim" }, p.schedulerConfig), {
    prompts: [prompt, prompt],
    steps: 2,
    guidance: 3,
    seed: 0,
  });
const images = (dir: string) => readSafetensors(join(dir, "samples.safetensors")).tensors.get("images")!;
const maxDiff = (a: HostTensor, b: HostTensor) => {
  let m = 0;
  for (let i = 0; i < a.size; i++) m = Math.max(m, Math.abs(Number(a.data[i]) - Number(b.data[i])));
  return m;
};
const sample = (out: string, ...extra: string[]) =>
  quietly(() =>
    run([
      "--model",
      sd,
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

test("a pipeline LoRA file loads into the U-Net and the text encoder; the CLI's --lora images are the library's", async () => {
  const pipe = await loadPipeline(sd);
  try {
    const base = await gen(pipe);
    const report = await loadLoraWeights(pipe, lora, { scale: 0.5 });
    assert.ok(
      (report.layers["unet"] ?? 0) > 0 && (report.layers["text_encoder"] ?? 0) > 0,
      JSON.stringify(report),
    );
    const styled = await gen(pipe);
    assert.ok(maxDiff(base, styled) > 1e-3, "the adapter changes the images");

    await sample(join(root, "base"));
    await sample(join(root, "off"), "--lora", `${lora}:0`);
    await sample(join(root, "half"), "--lora", `${lora}:0.5`);
    assert.ok(maxDiff(images(join(root, "base")), base) < 1e-6);
    assert.ok(maxDiff(images(join(root, "off")), base) < 1e-6, "scale 0 is the base model");
    assert.ok(maxDiff(images(join(root, "half")), styled) < 1e-5, "scale 0.5 as loaded by the library");
    const params = readSafetensors(join(root, "half", "samples.safetensors")).metadata["parameters"]!;
    assert.match(params, /lora: .*style\.safetensors:0\.5/);
  } finally {
    disposePipeline(pipe);
  }
});

test("--lora: FILE[:SCALE] parsing and clear refusals", async () => {
  assert.deepEqual(parseLoraSpec("a/b.safetensors"), { path: "a/b.safetensors", scale: 1 });
  assert.deepEqual(parseLoraSpec("a/b.safetensors:0.8"), { path: "a/b.safetensors", scale: 0.8 });
  assert.deepEqual(parseLoraSpec("C:\\loras\\x.safetensors"), { path: "C:\\loras\\x.safetensors", scale: 1 });
  assert.throws(() => parseLoraSpec("x.safetensors:0.8x"), /scale after ":" must be a number/);
  const cli = (argv: string[]) => quietly(() => run(argv));
  await assert.rejects(
    cli(["--model", sd, "--prompt", prompt, "--lora", "x.safetensors:.5e"]),
    (e: Error) => {
      assert.ok(e instanceof UsageError);
      return /--lora: .*must be a number/.test(e.message);
    },
  );
  await assert.rejects(
    cli(["--model", sd, "--prompt", prompt, "--lora", join(root, "missing.safetensors")]),
    /--lora .*missing\.safetensors/,
  );
  // a LoRA for another model: the tiny SD's LoRA on the bundled MNIST U-Net
  await assert.rejects(cli(["--model", "mnist", "--lora", lora]), /fit UNet2DModel.*another model/);
});
