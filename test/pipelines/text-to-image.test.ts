// Text-to-image pipelines end to end on a tiny random StableDiffusionPipeline folder: folder round
// trips, prompts (negative prompts, guidance), `diffuse sample --prompt / --prompt-file`, and bad
// prompts and bad folders answered clearly.
import assert from "node:assert/strict";
import { cpSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { after, before, test } from "node:test";
import { UsageError } from "../../src/cli/args.ts";
import { run } from "../../src/cli/sample.ts";
import { readSafetensors } from "../../src/io/safetensors.ts";
import {
  disposePipeline,
  type LoadedPipeline,
  loadPipeline,
  saveTextToImagePipeline,
} from "../../src/pipelines/pipeline-dir.ts";
import { imageSize, pipelineGenerate } from "../../src/pipelines/run.ts";
import { schedulerFor } from "../../src/pipelines/scheduler-names.ts";
import type { HostTensor } from "../../src/tensor/host.ts";
import { quietly } from "../support/quiet.ts";
import { makeTinySd, TINY_SD_CAPTIONS } from "../support/tiny-sd.ts";

let sd: string;
let root: string;
let pipe: LoadedPipeline;
before(async () => {
  sd = await makeTinySd();
  root = dirname(sd);
  pipe = await loadPipeline(sd);
});
after(() => {
  disposePipeline(pipe);
  rmSync(root, { recursive: true, force: true });
});

const ddim = () => schedulerFor({ name: "ddim" }, pipe.schedulerConfig);
const gen = (p: LoadedPipeline, prompts: string[], extra: Record<string, unknown> = {}) =>
  pipelineGenerate(p, schedulerFor({ name: "ddim" }, p.schedulerConfig), {
    prompts,
    steps: 3,
    guidance: 3,
    seed: 1,
    ...extra,
  });
const maxDiff = (a: HostTensor, b: HostTensor) => {
  let m = 0;
  for (let i = 0; i < a.size; i++) m = Math.max(m, Math.abs(Number(a.data[i]) - Number(b.data[i])));
  return m;
};

test("a StableDiffusionPipeline folder loads with all its parts and makes RGB images of its size in [0, 1]", async () => {
  assert.equal(pipe.pipelineClass, "StableDiffusionPipeline");
  assert.ok(pipe.text && pipe.vae);
  const imgs = await gen(pipe, [TINY_SD_CAPTIONS[0]!, TINY_SD_CAPTIONS[1]!]);
  const s = imageSize(pipe);
  assert.deepEqual(imgs.shape, [2, 3, s, s]);
  for (const v of imgs.data) assert.ok(v >= 0 && v <= 1);
});

test("save → load is the same pipeline: same images for the same prompts and seed; diffusers' layout", async () => {
  const copy = join(root, "copy");
  await saveTextToImagePipeline(copy, {
    unet: pipe.denoiser,
    textEncoder: pipe.text!.textEncoder,
    tokenizer: pipe.text!.tokenizer,
    vae: pipe.vae!,
    schedulerConfig: pipe.schedulerConfig,
    info: pipe.info,
  });
  const index = JSON.parse(readFileSync(join(copy, "model_index.json"), "utf8")) as Record<string, unknown>;
  assert.deepEqual(index["unet"], ["diffusers", "UNet2DConditionModel"]);
  assert.deepEqual(index["vae"], ["diffusers", "AutoencoderKL"]);
  assert.deepEqual(index["text_encoder"], ["transformers", "CLIPTextModel"]);
  assert.deepEqual(index["tokenizer"], ["transformers", "CLIPTokenizer"]);
  assert.deepEqual(index["safety_checker"], [null, null]);
  assert.deepEqual(index["feature_extractor"], [null, null]);
  for (const f of [
    "unet/diffusion_pytorch_model.safetensors",
    "vae/diffusion_pytorch_model.safetensors",
    "text_encoder/model.safetensors",
    "text_encoder/config.json",
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "scheduler/scheduler_config.json",
  ])
    assert.ok(readFileSync(join(copy, f)).length > 0, f);
  const again = await loadPipeline(copy);
  try {
    const prompts = [TINY_SD_CAPTIONS[2]!];
    assert.equal(maxDiff(await gen(pipe, prompts), await gen(again, prompts)), 0);
  } finally {
    disposePipeline(again);
  }
});

test("prompts steer the images; a negative prompt replaces the empty prompt in guidance (and is moot at guidance 1)", async () => {
  const [a, b] = [TINY_SD_CAPTIONS[0]!, TINY_SD_CAPTIONS[3]!];
  const base = await gen(pipe, [a]);
  assert.ok(maxDiff(base, await gen(pipe, [b])) > 1e-4, "another prompt, other pixels");
  assert.ok(maxDiff(base, await gen(pipe, [a], { negativePrompts: [b] })) > 1e-4, "negative prompt acts");
  const g1 = await gen(pipe, [a], { guidance: 1 });
  assert.equal(maxDiff(g1, await gen(pipe, [a], { guidance: 1, negativePrompts: [b] })), 0);
});

test("bad prompts are refused before any work, naming the problem", async () => {
  await assert.rejects(gen(pipe, [""]), /prompt is empty/);
  await assert.rejects(gen(pipe, [42 as unknown as string]), /prompt must be text, got number/);
  await assert.rejects(
    gen(pipe, ["word ".repeat(40)]),
    /tokens long; the text encoder reads at most 14: shorten it/,
  );
  await assert.rejects(
    gen(pipe, [TINY_SD_CAPTIONS[0]!], { negativePrompts: ["a", "b"] }),
    /2 negative prompts for 1 prompts/,
  );
  await assert.rejects(
    pipelineGenerate(pipe, ddim(), { labels: [1], steps: 2 }),
    /text-to-image model: give a prompt per image/,
  );
});

test("bad folders: a missing component folder, a wrong component class, a missing component entry", async () => {
  const broken = (name: string, edit: (dir: string) => void) => {
    const d = join(root, name);
    cpSync(sd, d, { recursive: true });
    edit(d);
    return d;
  };
  const noTok = broken("no-tok", (d) => rmSync(join(d, "tokenizer"), { recursive: true }));
  await assert.rejects(loadPipeline(noTok), /the tokenizer\/ folder is missing/);
  const editIndex = (f: (i: Record<string, unknown>) => void) => (d: string) => {
    const p = join(d, "model_index.json");
    const i = JSON.parse(readFileSync(p, "utf8")) as Record<string, unknown>;
    f(i);
    writeFileSync(p, JSON.stringify(i));
  };
  const t5 = broken(
    "t5",
    editIndex((i) => {
      i["text_encoder"] = ["transformers", "T5EncoderModel"];
    }),
  );
  await assert.rejects(
    loadPipeline(t5),
    /"text_encoder" must be \[library, "CLIPTextModel" \| "CLIPTextModelWithProjection"\]/,
  );
  const noVae = broken(
    "no-vae",
    editIndex((i) => {
      delete i["vae"];
    }),
  );
  await assert.rejects(loadPipeline(noVae), /needs its "vae" component/);
});

test("diffuse sample --prompt-file writes one image per line, in order, with the prompts in the metadata", async () => {
  const file = join(root, "prompts.txt");
  const prompts = [TINY_SD_CAPTIONS[1]!, TINY_SD_CAPTIONS[0]!, TINY_SD_CAPTIONS[4]!];
  writeFileSync(file, `${prompts.join("\n")}\n\n`);
  const out = join(root, "cli");
  // one image per forward: image k is prompt k's, drawn with seed 0 + k (the CLI's seed per batch)
  await quietly(() =>
    run(["--model", sd, "--prompt-file", file, "--steps", "2", "--batch", "1", "--out", out]),
  );
  const st = readSafetensors(join(out, "samples.safetensors"));
  const images = st.tensors.get("images")!;
  const s = imageSize(pipe);
  assert.deepEqual(images.shape, [3, 3, s, s]);
  assert.deepEqual(JSON.parse(st.metadata["prompts"]!), prompts);
  const per = 3 * s * s;
  for (const [k, prompt] of prompts.entries()) {
    const one = await pipelineGenerate(pipe, schedulerFor({ name: "ddim" }, pipe.schedulerConfig), {
      prompts: [prompt],
      steps: 2,
      guidance: 3, // the tiny pipeline's recommendation (diffuse.json)
      seed: k,
    });
    const got = (images.data as Float32Array).subarray(k * per, (k + 1) * per);
    let m = 0;
    for (let i = 0; i < per; i++) m = Math.max(m, Math.abs(got[i]! - one.data[i]!));
    assert.ok(m < 1e-6, `image ${k} is prompt ${k}'s (max diff ${m})`);
  }
});

test("the CLI refuses prompts for label models, labels for text models, and empty prompt files", async () => {
  const cli = (argv: string[]) => quietly(() => run(argv));
  await assert.rejects(cli(["--model", "mnist", "--prompt", "a cat"]), (e: Error) => {
    assert.ok(e instanceof UsageError);
    return /not a text-to-image model/.test(e.message);
  });
  await assert.rejects(cli(["--model", sd, "--labels", "1"]), /pass --prompt "…" or --prompt-file FILE/);
  await assert.rejects(cli(["--model", sd, "--prompt", "  "]), /--prompt is empty/);
  const empty = join(root, "empty.txt");
  writeFileSync(empty, "\n \n");
  await assert.rejects(cli(["--model", sd, "--prompt-file", empty]), /has no prompts/);
  await assert.rejects(cli(["--model", sd, "--prompt-file", join(root, "nope.txt")]), /cannot read/);
});
