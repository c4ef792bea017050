/**
 * Trains the emoji judge (src/eval/emoji-judge.ts) on all 7,572 emoji images — the held-out ones
 * included: it is the judge, not the generator — and writes assets/judges/emoji/{model.safetensors,
 * config.json} in one atomic directory swap. The accuracies recorded in config.json are measured
 * with the weights exactly as stored (after rounding to F16, if that is the storage dtype), on the
 * images as they are and on fresh random distortions of them (a seed the training never used).
 *
 *   npx tsx scripts/train-emoji-judge.ts [--steps 1500] [--seed 0] [--dtype F16] [--out assets/judges/emoji]
 */
import { join } from "node:path";
import { parseArgs } from "node:util";
import { loadEmoji } from "../src/data/emoji.ts";
import { EmojiJudge } from "../src/eval/emoji-classify.ts";
import { defaultEmojiJudgeConfig } from "../src/eval/emoji-judge.ts";
import { emojiDistortion, judgeAccuracy, trainEmojiJudge } from "../src/eval/train-emoji-judge.ts";
import { replaceDirAtomic, writeJsonAtomic } from "../src/io/atomic.ts";
import { f16ToFloat32, float32ToF16 } from "../src/io/half.ts";
import { writeSafetensors } from "../src/io/safetensors.ts";
import { HostTensor } from "../src/tensor/host.ts";
import type { Params } from "../src/tensor/params.ts";

const { values } = parseArgs({
  options: {
    steps: { type: "string", default: "1500" },
    seed: { type: "string", default: "0" },
    batch: { type: "string", default: "128" },
    lr: { type: "string", default: "0.003" },
    dtype: { type: "string", default: "F16" },
    out: { type: "string", default: "assets/judges/emoji" },
  },
});
const steps = Number(values.steps);
const seed = Number(values.seed);
const batchSize = Number(values.batch);
const lr = Number(values.lr);
const dtype = values.dtype;
if (dtype !== "F16" && dtype !== "F32") throw new Error(`--dtype must be F16 or F32, got ${dtype}`);

const config = defaultEmojiJudgeConfig;
const data = loadEmoji({ split: "all", size: config.imageSize });
const trained = await trainEmojiJudge({
  steps,
  seed,
  batchSize,
  lr,
  config,
  dataset: data,
  onLog: ({ step, loss, lr, seconds }) =>
    console.log(
      `step ${step}/${steps}  loss ${loss.toFixed(4)}  lr ${lr.toExponential(2)}  ${seconds.toFixed(0)} s`,
    ),
});

// the weights as they will be read back
const stored: Params = new Map(
  [...trained.params].map(([k, t]) => [
    k,
    dtype === "F16" ? new HostTensor(f16ToFloat32(float32ToF16(t.data)), t.shape) : t,
  ]),
);
const judge = await EmojiJudge.create(trained.config, stored);
const holdout = loadEmoji({ split: "holdout", size: config.imageSize });
const accuracy = {
  all_clean: await judgeAccuracy(judge, data),
  all_distorted: await judgeAccuracy(judge, data, { distortion: emojiDistortion }),
  holdout_clean: await judgeAccuracy(judge, holdout),
  holdout_distorted: await judgeAccuracy(judge, holdout, { distortion: emojiDistortion }),
};
judge.dispose();
for (const [k, a] of Object.entries(accuracy)) {
  const pct = (v: number) => `${(100 * v).toFixed(1)}%`;
  console.log(
    `${k.padEnd(18)} identity top-1 ${pct(a.identityTop1)}  top-5 ${pct(a.identityTop5)}  vendor ${pct(a.vendor)}  (${a.n} images)`,
  );
}
console.log(`trained in ${trained.seconds.toFixed(0)} s (${dtype} weights)`);

const out = {
  architecture: trained.config,
  accuracy,
  accuracy_note:
    "clean: the real images as they are (all were trained on); distorted: one fresh random distortion of each (seed 12345, never used in training)",
  data: "emoji-datasource-twitter and emoji-datasource-google 16.0.0, all 7,572 images (holdout included), 32×32 on white",
  seed,
  steps,
  batch_size: batchSize,
  peak_lr: lr,
  augmentation: emojiDistortion,
  dropout: 0.1,
  imprint_views: 4,
  final_train_loss: trained.finalLoss,
  train_seconds: Math.round(trained.seconds),
  weights_dtype: dtype,
  date: new Date().toISOString(),
};
replaceDirAtomic(values.out, (tmp) => {
  writeSafetensors(join(tmp, "model.safetensors"), stored, { dtype, metadata: { format: "pt" } });
  writeJsonAtomic(join(tmp, "config.json"), out);
});
console.log(`wrote ${values.out}/model.safetensors and config.json`);
