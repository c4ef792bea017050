/**
 * SD3's text conditioning assembly (StableDiffusion3Pipeline.encode_prompt): CLIP-L ‖ CLIP-G token
 * states zero-padded to joint_attention_dim, then T5's tokens (or zeros without T5), pooled vectors
 * concatenated — against tensors written out by hand; the penultimate-layer pick; the assembled
 * conditioning driving an SD3 transformer; and bad inputs answered clearly.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { SD3Transformer2DModel } from "../../src/models/mmdit/index.ts";
import { CLIPTextModelWithProjection } from "../../src/models/text/clip-text-model.ts";
import { assembleSd3Text, type Sd3ClipStates, sd3ClipStates } from "../../src/pipelines/sd3-text.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import { Rng } from "../../src/tensor/rng.ts";

const t = (data: number[], shape: number[]) => new HostTensor<"float32">(Float32Array.from(data), shape);

// 2 prompts, 2 CLIP tokens; CLIP-L 2 wide (values 1x), CLIP-G 3 wide (values 2x); pooled 1 and 2 wide
const clipL: Sd3ClipStates = {
  hidden: t([11, 12, 13, 14, /* prompt 2 */ 15, 16, 17, 18], [2, 2, 2]),
  pooled: t([101, 102], [2, 1]),
};
const clipG: Sd3ClipStates = {
  hidden: t([21, 22, 23, 24, 25, 26, /* prompt 2 */ 27, 28, 29, 30, 31, 32], [2, 2, 3]),
  pooled: t([201, 202, 203, 204], [2, 2]),
};

test("sd3 text: CLIP-L ‖ CLIP-G padded to joint_attention_dim, then T5's tokens; pooled concatenated", () => {
  // T5: 1 token of width J = 7
  const t5 = t([51, 52, 53, 54, 55, 56, 57, /* prompt 2 */ 61, 62, 63, 64, 65, 66, 67], [2, 1, 7]);
  const c = assembleSd3Text({ clip: [clipL, clipG], t5, jointAttentionDim: 7 });
  assert.equal(c.kind, "text");
  assert.deepEqual(c.embeds.shape, [2, 3, 7]);
  // biome-ignore format: one row per token
  assert.deepEqual(Array.from(c.embeds.data), [
    11, 12, 21, 22, 23, 0, 0, // prompt 1, token 1: CLIP-L | CLIP-G | zeros
    13, 14, 24, 25, 26, 0, 0, //            token 2
    51, 52, 53, 54, 55, 56, 57, //          T5
    15, 16, 27, 28, 29, 0, 0, // prompt 2
    17, 18, 30, 31, 32, 0, 0,
    61, 62, 63, 64, 65, 66, 67,
  ]);
  assert.deepEqual(c.pooled!.shape, [2, 3]);
  assert.deepEqual(Array.from(c.pooled!.data), [101, 201, 202, 102, 203, 204]);
});

test("sd3 text: without T5 (text_encoder_3 null) its tokens are zeros, max_sequence_length of them", () => {
  const c = assembleSd3Text({ clip: [clipL, clipG], t5: null, jointAttentionDim: 6, maxSequenceLength: 2 });
  assert.deepEqual(c.embeds.shape, [2, 4, 6]);
  // biome-ignore format: one row per token
  assert.deepEqual(Array.from(c.embeds.data), [
    11, 12, 21, 22, 23, 0,
    13, 14, 24, 25, 26, 0,
    0, 0, 0, 0, 0, 0, // the T5 tokens: zeros
    0, 0, 0, 0, 0, 0,
    15, 16, 27, 28, 29, 0,
    17, 18, 30, 31, 32, 0,
    0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0,
  ]);
  // diffusers' default max_sequence_length: 77 CLIP tokens (here 2) + 256 zero tokens
  const dflt = assembleSd3Text({ clip: [clipL, clipG], t5: null, jointAttentionDim: 5 });
  assert.deepEqual(dflt.embeds.shape, [2, 258, 5]);
});

test("sd3 text: the penultimate layer of each CLIP, assembled, conditions an SD3 transformer", async () => {
  const small = {
    vocabSize: 50,
    intermediateSize: 24,
    numHiddenLayers: 2,
    numAttentionHeads: 2,
    maxPositionEmbeddings: 10,
    bosTokenId: 48,
    eosTokenId: 49,
    padTokenId: 49,
  };
  const l = CLIPTextModelWithProjection.fromConfig(
    { ...small, hiddenSize: 8, projectionDim: 4 },
    { seed: 1 },
  );
  const g = CLIPTextModelWithProjection.fromConfig(
    { ...small, hiddenSize: 12, projectionDim: 6 },
    { seed: 2 },
  );
  const ids = [
    [48, 7, 20, 49, 49, 49],
    [48, 3, 49, 49, 49, 49],
  ];
  const outL = await l.forward(ids, { outputHiddenStates: true });
  const outG = await g.forward(ids, { outputHiddenStates: true });
  const sl = sd3ClipStates(outL);
  assert.equal(sl.hidden, outL.hiddenStates![1]); // 2 layers: [embeddings, layer 1, layer 2] → layer 1
  assert.equal(sd3ClipStates(outL, 1).hidden, outL.hiddenStates![0]);
  assert.equal(sl.pooled, outL.textEmbeds);
  assert.throws(() => sd3ClipStates(outL, 2), /clipSkip 2 is out of range; use an integer from 0 to 1/);
  assert.throws(() => sd3ClipStates({ ...outL, hiddenStates: undefined }), /\{ outputHiddenStates: true \}/);

  const cond = assembleSd3Text({
    clip: [sl, sd3ClipStates(outG)],
    t5: null,
    jointAttentionDim: 24,
    maxSequenceLength: 3,
  });
  assert.deepEqual(cond.embeds.shape, [2, 9, 24]);
  assert.deepEqual(cond.pooled!.shape, [2, 10]);
  const mmdit = SD3Transformer2DModel.fromConfig({
    sample_size: 8,
    in_channels: 1,
    out_channels: 1,
    num_layers: 1,
    num_attention_heads: 2,
    attention_head_dim: 4,
    joint_attention_dim: 24,
    caption_projection_dim: 8,
    pooled_projection_dim: 10,
    pos_embed_max_size: 4,
  });
  const x = new HostTensor<"float32">(new Rng(1).normal(2 * 64), [2, 1, 8, 8]);
  assert.deepEqual((await mmdit.denoise(x, [1, 2], cond)).shape, [2, 1, 8, 8]);
});

test("sd3 text: mismatched encoders and widths are answered with the fix", () => {
  const bad = (over: Partial<Parameters<typeof assembleSd3Text>[0]>, msg: RegExp) =>
    assert.throws(
      () => assembleSd3Text({ clip: [clipL, clipG], t5: null, jointAttentionDim: 8, ...over }),
      msg,
    );
  bad({ jointAttentionDim: 4 }, /the CLIP states are 2 \+ 3 = 5 wide, more than joint_attention_dim 4/);
  bad(
    { t5: t(new Array(2 * 9).fill(0), [2, 1, 9]) },
    /T5's states are \[2, 1, 9\], but joint_attention_dim is 8/,
  );
  bad({ t5: t(new Array(8).fill(0), [1, 1, 8]) }, /different batches \(2, 2, 2, 2, 1 prompts\)/);
  bad({ clip: [clipL, { ...clipG, hidden: t(new Array(9).fill(0), [1, 3, 3]) }] }, /different batches/);
  bad(
    { clip: [clipL, { ...clipG, hidden: t(new Array(18).fill(0), [2, 3, 3]) }] },
    /CLIP-L gives 2 tokens and CLIP-G 3/,
  );
  bad(
    { clip: [clipL, { ...clipG, pooled: t([1, 2], [2]) }] },
    /CLIP-G's pooled vector must be float32 of rank 2/,
  );
  bad({ maxSequenceLength: -1 }, /maxSequenceLength -1 must be an integer ≥ 0/);
});
