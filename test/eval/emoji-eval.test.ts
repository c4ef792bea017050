import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { type EmojiDataset, emojiCatalog, emojiRecords, loadEmoji } from "../../src/data/emoji.ts";
import { randomDistort } from "../../src/eval/augment.ts";
import { EmojiJudge, TOP_K, toJudgeInput, topK } from "../../src/eval/emoji-classify.ts";
import { evalEmoji, evaluateEmoji } from "../../src/eval/emoji-eval.ts";
import { toUnitRange } from "../../src/eval/images.ts";
import { emojiDistortion, judgeAccuracy, trainEmojiJudge } from "../../src/eval/train-emoji-judge.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import { Rng } from "../../src/tensor/rng.ts";

let judge: EmojiJudge;
let holdout: EmojiDataset;

before(async () => {
  judge = await EmojiJudge.load();
  holdout = loadEmoji({ split: "holdout", size: 32 });
});
after(() => judge.dispose());

const imagesOf = (d: EmojiDataset) => new HostTensor(d.images, [d.count, 3, d.height, d.width]);

test("the bundled judge knows the real held-out emoji, plain and distorted", async () => {
  const clean = await judgeAccuracy(judge, holdout);
  assert.ok(clean.identityTop5 > 0.95 && clean.identityTop1 > 0.85, `clean ${JSON.stringify(clean)}`);
  assert.ok(clean.vendor > 0.95, `clean ${JSON.stringify(clean)}`);
  const moved = await judgeAccuracy(judge, holdout, { distortion: emojiDistortion, seed: 7 });
  assert.ok(moved.identityTop5 > 0.85 && moved.vendor > 0.9, `distorted ${JSON.stringify(moved)}`);
});

test("the judge is deterministic and does not depend on batch position", async () => {
  const x = imagesOf(holdout);
  const a = await judge.classify(x);
  const b = await judge.classify(x);
  assert.deepEqual([...a.identityTop], [...b.identityTop]);
  assert.deepEqual([...a.features], [...b.features]);
  const f = judge.config.features;
  const one = await judge.classify(new HostTensor(holdout.images.slice(5 * 3072, 7 * 3072), [2, 3, 32, 32]));
  let worst = 0;
  for (let j = 0; j < 2 * f; j++)
    worst = Math.max(worst, Math.abs(one.features[j]! - a.features[5 * f + j]!));
  assert.ok(worst < 1e-4, `features differ by ${worst}`);
});

test("evaluateEmoji: real images score as the real reference; noise and blank images score low", async () => {
  const targets = { identities: holdout.identities, vendors: holdout.vendors };
  const real = await evaluateEmoji(imagesOf(holdout), targets, { judge });
  assert.equal(real.n, 475);
  assert.equal(real.prompts, 475);
  assert.equal(real.identityTop1, real.real.identityTop1);
  assert.equal(real.vendorAccuracy, real.real.vendorAccuracy);
  assert.ok(
    real.frechet < 1e-3 * real.frechetOtherVendor,
    `FD of the real images themselves: ${real.frechet}`,
  );
  assert.ok(real.frechetOtherVendor > 0);

  const rng = new Rng(3);
  const noise = new Float32Array(holdout.images.length);
  for (let i = 0; i < noise.length; i++) noise[i] = rng.nextUniform();
  const n = await evaluateEmoji(new HostTensor(noise, [475, 3, 32, 32]), targets, { judge });
  assert.ok(n.identityTop5 < 0.02, `noise top-5 ${n.identityTop5}`);
  assert.ok(n.frechet > 3 * real.frechetOtherVendor, `noise FD ${n.frechet} vs ${real.frechetOtherVendor}`);
  const blank = await evaluateEmoji(
    new HostTensor(new Float32Array(noise.length).fill(1), [475, 3, 32, 32]),
    targets,
    {
      judge,
    },
  );
  assert.ok(blank.identityTop5 < 0.02, `blank top-5 ${blank.identityTop5}`);
  assert.ok(blank.frechet > 3 * real.frechetOtherVendor, `blank FD ${blank.frechet}`);
  // the images in [−1, 1], said so
  const sym = new HostTensor(
    holdout.images.map((v) => 2 * v - 1),
    [475, 3, 32, 32],
  );
  const back = toUnitRange(sym, "-1,1").data;
  assert.ok(back.every((v, k) => Math.abs(v - holdout.images[k]!) < 1e-6));
  await assert.rejects(evaluateEmoji(sym, targets, { judge }), /pass range "-1,1"/);
  await assert.rejects(
    evaluateEmoji(imagesOf(holdout), { identities: [1, 2], vendors: [0, 1] }, { judge }),
    /2 identities and 2 vendors for 475 images/,
  );
});

test("evalEmoji: the generator is asked for training prompts and held-out compositions", async () => {
  const all = loadEmoji({ split: "all", size: 64 });
  const byCaption = new Map(all.captions.map((c, i) => [c, i]));
  const per = 3 * 64 * 64;
  const asked: string[] = [];
  // a perfect generator: the real image of each caption, at 64×64
  const oracle = async (prompts: string[]) => {
    asked.push(...prompts);
    const out = new Float32Array(prompts.length * per);
    prompts.forEach((p, i) => {
      const k = byCaption.get(p);
      assert.ok(k !== undefined, `unknown prompt ${p}`);
      out.set(all.images.subarray(k * per, (k + 1) * per), i * per);
    });
    return new HostTensor(out, [prompts.length, 3, 64, 64]);
  };
  const r = await evalEmoji(oracle, { judge, prompts: 100, batchSize: 40 });
  assert.equal(asked.length, 200);
  assert.equal(r.trainPrompts.length, 100);
  assert.equal(r.holdoutPrompts.length, 100);
  const held = new Set(emojiRecords("holdout").map((x) => x.caption));
  assert.ok(r.trainPrompts.every((p) => !held.has(p)));
  assert.ok(r.holdoutPrompts.every((p) => held.has(p)));
  for (const s of [r.train, r.holdout]) {
    assert.equal(s.n, 100);
    assert.ok(s.identityTop5 > 0.9 && s.vendorAccuracy > 0.9, JSON.stringify(s));
    assert.ok(s.frechet < 0.5 * s.frechetOtherVendor, JSON.stringify(s));
  }
});

test("helpers: top-k ranking, 2×2 block means, value ranges", () => {
  assert.deepEqual(topK([0.1, 0.5, 0.2, 0.5, 0.9, 0], 3), [4, 1, 3]);
  assert.deepEqual(topK([3, 1], 5), [0, 1]);
  const x = new HostTensor(
    Float32Array.from({ length: 3 * 64 * 64 }, (_, i) => i % 2),
    [1, 3, 64, 64],
  );
  const small = toJudgeInput(x, 32);
  assert.deepEqual(small.shape, [1, 3, 32, 32]);
  assert.ok(small.data.every((v) => v === 0.5));
  assert.throws(
    () => toJudgeInput(new HostTensor(new Float32Array(48 * 48 * 3), [1, 3, 48, 48]), 32),
    /\[N, 3, 32·k/,
  );
  assert.deepEqual(
    [...toUnitRange(new HostTensor(Float32Array.of(-1.05, 0, 1), [3]), "-1,1").data],
    [0, 0.5, 1],
  );
  assert.throws(() => toUnitRange(new HostTensor(Float32Array.of(Number.NaN), [1])), /NaN/);
  assert.equal(TOP_K, 5);
  // distortions of an image on white pull in white from outside
  const white: HostTensor<"float32"> = new HostTensor(
    new Float32Array(2 * 3 * 16 * 16).fill(1),
    [2, 3, 16, 16],
  );
  const moved = randomDistort(white, { ...emojiDistortion, shift: 4, degrees: 30 }, new Rng(0), 1);
  assert.ok(moved.data.every((v) => Math.abs(v - 1) < 1e-6));
  assert.equal(emojiCatalog().identities.length, judge.config.identities);
});

test("a narrow judge trained briefly learns, and imprinting makes its identity head read the real images", async () => {
  const trained = await trainEmojiJudge({
    steps: 40,
    batchSize: 32,
    seed: 1,
    threads: 2,
    dataset: holdout,
    config: {
      channels: [8, 16, 32],
      features: 32,
      identities: 3786,
      vendors: 2,
      identityScale: 16,
      imageSize: 32,
    },
    imprintViews: 1,
  });
  const small = await EmojiJudge.create(trained.config, trained.params);
  try {
    const acc = await judgeAccuracy(small, holdout);
    assert.ok(acc.identityTop5 > 0.5, `after 40 steps and imprinting: ${JSON.stringify(acc)}`);
  } finally {
    small.dispose();
  }
});
