/**
 * StableDiffusion3Pipeline folders: diffusers' layout (two CLIP text encoders with projection, T5
 * null) and diffuse's one-encoder MM-DiT layout, written and read back; the loaded pipeline's
 * conditioning against one assembled by hand from the encoders' outputs, its images against the
 * in-memory parts'; and bad inputs (a prompt too long, a wrong latent size, missing or unsupported
 * components) answered clearly.
 */
import assert from "node:assert/strict";
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { SD3Transformer2DModel } from "../../src/models/mmdit/index.ts";
import { trainClipBpe } from "../../src/models/text/bpe-train.ts";
import { CLIPTextModelWithProjection } from "../../src/models/text/clip-text-model.ts";
import type { CLIPTokenizer } from "../../src/models/text/clip-tokenizer.ts";
import { AutoencoderKL } from "../../src/models/vae/model.ts";
import { generate } from "../../src/pipelines/generate.ts";
import { disposePipeline, loadPipeline } from "../../src/pipelines/pipeline-dir.ts";
import { pipelineGenerate } from "../../src/pipelines/run.ts";
import { schedulerFor } from "../../src/pipelines/scheduler-names.ts";
import { saveSd3Pipeline } from "../../src/pipelines/sd3-pipeline.ts";
import { assembleSd3Text, sd3ClipStates } from "../../src/pipelines/sd3-text.ts";
import { latentDecoder, promptConditions, tokenizePrompts } from "../../src/pipelines/text-to-image.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import { Rng } from "../../src/tensor/rng.ts";

const root = mkdtempSync(join(tmpdir(), "diffuse-sd3-pipe-"));
after(() => rmSync(root, { recursive: true, force: true }));

const PROMPTS = ["a red circle", "a blue square", "a green star", "a yellow moon over a hill"];
const SCHEDULER = { _class_name: "FlowMatchEulerDiscreteScheduler", num_train_timesteps: 1000, shift: 3.0 };
const VAE = {
  _class_name: "AutoencoderKL",
  block_out_channels: [8, 8],
  down_block_types: ["DownEncoderBlock2D", "DownEncoderBlock2D"],
  up_block_types: ["UpDecoderBlock2D", "UpDecoderBlock2D"],
  layers_per_block: 1,
  norm_num_groups: 4,
  latent_channels: 4,
  sample_size: 16,
};
const transformerConfig = (jointDim: number, pooledDim: number) => ({
  _class_name: "SD3Transformer2DModel",
  sample_size: 8,
  patch_size: 2,
  in_channels: 4,
  out_channels: 4,
  num_layers: 2,
  num_attention_heads: 2,
  attention_head_dim: 8,
  caption_projection_dim: 16,
  joint_attention_dim: jointDim,
  pooled_projection_dim: pooledDim,
  pos_embed_max_size: 6,
});

/** A transformer with random weights (a fresh one outputs exactly zero). */
function randomTransformer(config: Record<string, unknown>, seed: number): SD3Transformer2DModel {
  const fresh = SD3Transformer2DModel.fromConfig(config);
  const rng = new Rng(seed);
  const params = new Map<string, HostTensor<"float32">>(
    [...fresh.params].map(([k, v]) => [
      k,
      k === "pos_embed.pos_embed" ? v : new HostTensor<"float32">(rng.normal(v.size, 0, 0.05), v.shape),
    ]),
  );
  fresh.dispose();
  return SD3Transformer2DModel.fromParams(config, params);
}

function clip(tok: CLIPTokenizer, hidden: number, projection: number, seed: number) {
  return CLIPTextModelWithProjection.fromConfig(
    {
      vocab_size: tok.vocabSize,
      hidden_size: hidden,
      intermediate_size: 2 * hidden,
      projection_dim: projection,
      num_hidden_layers: 2,
      num_attention_heads: 2,
      max_position_embeddings: tok.modelMaxLength,
      bos_token_id: tok.bosTokenId,
      eos_token_id: tok.eosTokenId,
      pad_token_id: tok.padTokenId,
    },
    { seed },
  );
}

const maxDiff = (a: HostTensor, b: HostTensor) => {
  assert.deepEqual(a.shape, b.shape);
  let m = 0;
  for (let i = 0; i < a.size; i++) m = Math.max(m, Math.abs(Number(a.data[i]) - Number(b.data[i])));
  return m;
};

test("sd3 pipeline: diffusers' layout (CLIP-L, CLIP-G, no T5) round trips; prompts give encode_prompt's conditioning", async () => {
  const dir = join(root, "two");
  const tokL = trainClipBpe(PROMPTS, { vocabSize: 560, modelMaxLength: 32 });
  const tokG = trainClipBpe(PROMPTS, { vocabSize: 580, modelMaxLength: 32 });
  const l = clip(tokL, 8, 6, 1);
  const g = clip(tokG, 12, 10, 2);
  const transformer = randomTransformer(transformerConfig(24, 16), 3);
  const vae = AutoencoderKL.fromConfig(VAE, { seed: 4 });
  await saveSd3Pipeline(dir, {
    transformer,
    textEncoder: l,
    tokenizer: tokL,
    second: { textEncoder: g, tokenizer: tokG },
    vae,
    schedulerConfig: SCHEDULER,
    info: { numClasses: null },
  });
  const index = JSON.parse(readFileSync(join(dir, "model_index.json"), "utf8"));
  assert.equal(index._class_name, "StableDiffusion3Pipeline");
  assert.deepEqual(index.text_encoder_2, ["transformers", "CLIPTextModelWithProjection"]);
  assert.deepEqual(index.tokenizer_2, ["transformers", "CLIPTokenizer"]);
  assert.deepEqual(index.text_encoder_3, [null, null]);
  assert.deepEqual(index.transformer, ["diffusers", "SD3Transformer2DModel"]);

  const pipe = await loadPipeline(dir);
  try {
    assert.equal(pipe.pipelineClass, "StableDiffusion3Pipeline");
    assert.equal(pipe.text?.sd3?.maxSequenceLength, 256); // diffusers' default without T5
    const prompts = PROMPTS.slice(0, 2);
    const { cond, uncond } = await promptConditions(pipe.text!, prompts);
    // by hand: each CLIP's penultimate states and text_embeds, 256 zero tokens for T5
    const opts = { outputHiddenStates: true };
    const want = assembleSd3Text({
      clip: [
        sd3ClipStates(await l.forward(tokenizePrompts(tokL, prompts), opts)),
        sd3ClipStates(await g.forward(tokenizePrompts(tokG, prompts), opts)),
      ],
      t5: null,
      jointAttentionDim: 24,
    });
    assert.ok(cond.kind === "text" && uncond.kind === "text");
    assert.deepEqual(cond.embeds.shape, [2, 32 + 256, 24]);
    assert.ok(maxDiff(cond.embeds, want.embeds) < 1e-6);
    assert.ok(maxDiff(cond.pooled!, want.pooled!) < 1e-6);
    assert.deepEqual(uncond.pooled!.shape, [2, 16]);

    // the loaded pipeline makes the images the parts in memory make
    const scheduler = schedulerFor({ name: "flow-euler" }, pipe.schedulerConfig);
    const got = await pipelineGenerate(pipe, scheduler, { prompts, steps: 3, guidance: 4, seed: 5 });
    const ref = await generate(transformer, scheduler, {
      conditions: { cond: want, uncond },
      steps: 3,
      guidance: 4,
      seed: 5,
      size: 8,
      decode: latentDecoder(vae),
    });
    assert.deepEqual(got.shape, [2, 3, 16, 16]);
    assert.ok(maxDiff(got, ref) < 1e-5, `images differ by ${maxDiff(got, ref)}`);
  } finally {
    disposePipeline(pipe);
  }
  for (const m of [l, g, transformer, vae]) m.dispose();
});

test("sd3 pipeline: diffuse's one-encoder layout (text_encoder_2 null, maxSequenceLength 0)", async () => {
  const dir = join(root, "one");
  const tok = trainClipBpe(PROMPTS, { vocabSize: 560, modelMaxLength: 24 });
  const te = clip(tok, 8, 16, 6);
  const transformer = randomTransformer(transformerConfig(12, 16), 7);
  const vae = AutoencoderKL.fromConfig(VAE, { seed: 8 });
  await saveSd3Pipeline(dir, {
    transformer,
    textEncoder: te,
    tokenizer: tok,
    vae,
    schedulerConfig: SCHEDULER,
    info: { numClasses: null, maxSequenceLength: 0 },
  });
  const index = JSON.parse(readFileSync(join(dir, "model_index.json"), "utf8"));
  assert.deepEqual(
    [index.text_encoder_2, index.tokenizer_2],
    [
      [null, null],
      [null, null],
    ],
  );
  const pipe = await loadPipeline(dir);
  try {
    assert.equal(pipe.text?.sd3?.second, null);
    const { cond } = await promptConditions(pipe.text!, ["a green star"]);
    assert.ok(cond.kind === "text");
    // the penultimate states, zero-padded from 8 to 12 features; the text_embeds as the whole pooled vector
    const out = await te.forward(tokenizePrompts(tok, ["a green star"]), { outputHiddenStates: true });
    const h = out.hiddenStates![1]!;
    assert.deepEqual(cond.embeds.shape, [1, 24, 12]);
    for (let t = 0; t < 24; t++)
      for (let f = 0; f < 12; f++) assert.equal(cond.embeds.data[t * 12 + f], f < 8 ? h.data[t * 8 + f] : 0);
    assert.deepEqual(Array.from(cond.pooled!.data), Array.from(out.textEmbeds.data));
    const x = await pipelineGenerate(pipe, schedulerFor({ name: "dpm++2m" }, pipe.schedulerConfig), {
      prompts: ["a red circle"],
      steps: 2,
      guidance: 3,
    });
    assert.deepEqual(x.shape, [1, 3, 16, 16]);
  } finally {
    disposePipeline(pipe);
  }
  for (const m of [te, transformer, vae]) m.dispose();
});

test("sd3 pipeline: bad prompts, latent sizes and folders are answered with the fix", async () => {
  const dir = join(root, "one");
  const pipe = await loadPipeline(dir);
  const scheduler = schedulerFor({ name: "flow-euler" }, pipe.schedulerConfig);
  try {
    await assert.rejects(
      pipelineGenerate(pipe, scheduler, { prompts: ["a red circle ".repeat(9)], steps: 2 }),
      /prompt 1 is \d+ tokens long; the text encoder reads at most 22: shorten it/,
    );
    await assert.rejects(
      pipelineGenerate(pipe, scheduler, { prompts: ["a red circle"], steps: 2, size: 17 }),
      /image size 17 is not a multiple of the VAE's factor 2/,
    );
    await assert.rejects(
      pipelineGenerate(pipe, scheduler, { prompts: ["a red circle"], steps: 2, size: 18 }),
      /image size 18 gives 9×9 latents, not a multiple of 2 as SD3Transformer2DModel needs: use a multiple of 4/,
    );
    await assert.rejects(
      pipelineGenerate(pipe, scheduler, { prompts: ["a red circle"], steps: 2, size: 32 }),
      /positions exist for at most 6×6 \(pos_embed_max_size 6\); pass at most 12×12/,
    );
  } finally {
    disposePipeline(pipe);
  }

  const index = JSON.parse(readFileSync(join(dir, "model_index.json"), "utf8"));
  const edited = (over: Record<string, unknown>) => {
    writeFileSync(join(dir, "model_index.json"), JSON.stringify({ ...index, ...over }));
    return loadPipeline(dir);
  };
  try {
    await assert.rejects(
      edited({
        text_encoder_3: ["transformers", "T5EncoderModel"],
        tokenizer_3: ["transformers", "T5TokenizerFast"],
      }),
      /"text_encoder_3" is T5EncoderModel; diffuse has no T5 encoder.*set "text_encoder_3" and "tokenizer_3" to \[null, null\]/,
    );
    await assert.rejects(
      edited({ text_encoder_2: ["transformers", "CLIPTextModelWithProjection"] }),
      /"text_encoder_2" and "tokenizer_2" go together; one is null and the other CLIPTextModelWithProjection/,
    );
    await assert.rejects(
      edited({ text_encoder: [null, null] }),
      /a StableDiffusion3Pipeline needs its "text_encoder" component; it is missing or null/,
    );
    await assert.rejects(
      edited({ text_encoder: ["transformers", "CLIPTextModel"] }),
      /"text_encoder" must be \["transformers", "CLIPTextModelWithProjection"\] \(SD3 takes its text_embeds\)/,
    );
    await assert.rejects(edited({ vae: [null, null] }), /needs its "vae" component; it is missing or null/);
    await assert.rejects(
      edited({ image_encoder: ["transformers", "SiglipVisionModel"] }),
      /"image_encoder" \(IP-Adapter\) is not supported/,
    );
  } finally {
    writeFileSync(join(dir, "model_index.json"), JSON.stringify(index));
  }
  // a text encoder from another pipeline: its pooled width is not the transformer's pooled_projection_dim
  const mixed = join(root, "mixed");
  cpSync(dir, mixed, { recursive: true });
  rmSync(join(mixed, "text_encoder"), { recursive: true });
  cpSync(join(root, "two", "text_encoder"), join(mixed, "text_encoder"), { recursive: true });
  await assert.rejects(
    loadPipeline(mixed),
    /the text encoders' projection_dim 6 = 6 must equal the transformer's pooled_projection_dim 16/,
  );
  rmSync(join(mixed, "vae"), { recursive: true });
  await assert.rejects(loadPipeline(mixed), /the vae\/ folder is missing \(model_index.json lists it\)/);
});
