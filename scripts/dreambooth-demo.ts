/**
 * The DreamBooth demo, measured: teaches the bundled emoji model a subject it has never seen — a BLUE
 * apple (the green apple emoji with its green and blue channels swapped), five images the project makes
 * (both vendors' drawings, mirrored, and one shifted) — with LoRA and prior preservation, then measures
 * with the emoji judge:
 *   similarity  mean cosine similarity of the judge's features φ — centred on the mean φ of 512 real
 *               training emoji, so that "an emoji at all" counts for nothing — between what the
 *               instance prompt generates and the five instance images (base model vs base + LoRA);
 *   prior       identity top-5 and vendor accuracy on ordinary training prompts (base vs base + LoRA):
 *               the class prior must hold (top-5 drops by ≤ 5 points).
 * Writes runs/dreambooth/{instance/, run/, result.json} and docs/dreambooth.png (rows: the instance
 * images; the base on the instance prompt; base + LoRA on it; base + LoRA on the class prompt).
 *
 *   node --import tsx scripts/dreambooth-demo.ts [--steps 300] [--lr 5e-4] [--rank 4] [--prompts 100]
 *     [--targets LIST] [--text-encoder] [--class-images 32] [--root runs/dreambooth] [--eval-only]
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { run as finetune } from "../src/cli/finetune.ts";
import { loadEmoji } from "../src/data/emoji.ts";
import { EmojiJudge } from "../src/eval/emoji-classify.ts";
import { evalEmoji } from "../src/eval/emoji-eval.ts";
import { writeFileAtomic } from "../src/io/atomic.ts";
import { makeGrid } from "../src/io/grid.ts";
import { encodePng } from "../src/io/png.ts";
import { loadLoraWeights, setLoraScale } from "../src/models/lora/index.ts";
import { samplingDefaults } from "../src/pipelines/options.ts";
import { loadPipeline } from "../src/pipelines/pipeline-dir.ts";
import { pipelineGenerate } from "../src/pipelines/run.ts";
import { schedulerFor } from "../src/pipelines/scheduler-names.ts";
import { HostTensor } from "../src/tensor/host.ts";

const args = process.argv.slice(2);
const arg = (name: string, dflt: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1]! : dflt;
};
const ROOT = arg("root", "runs/dreambooth");
const INSTANCE = "zwx apple, twitter style";
const CLASS = "green apple, twitter style";
const SOURCES = ["green apple, twitter style", "green apple, google style"];
const S = 64;
const per = 3 * S * S;

// the five instance images: channels G and B swapped (green → blue), mirrored, one shifted
const data = loadEmoji({ split: "train" });
const src = SOURCES.map((c) => {
  const i = data.captions.indexOf(c);
  if (i < 0) throw new Error(`no training image captioned "${c}"`);
  return data.images.subarray(i * per, (i + 1) * per);
});
const variant = (img: Float32Array, mirror: boolean, dx: number): Float32Array => {
  const out = new Float32Array(per).fill(1);
  const from = [0, 2, 1]; // R, B→G, G→B
  for (let c = 0; c < 3; c++)
    for (let y = 0; y < S; y++)
      for (let x = 0; x < S; x++) {
        const sx = (mirror ? S - 1 - x : x) - dx;
        if (sx < 0 || sx >= S) continue;
        out[c * S * S + y * S + x] = img[from[c]! * S * S + y * S + sx]!;
      }
  return out;
};
const instances = [
  variant(src[0]!, false, 0),
  variant(src[1]!, false, 0),
  variant(src[0]!, true, 0),
  variant(src[1]!, true, 0),
  variant(src[0]!, false, 3),
];
const instDir = join(ROOT, "instance");
mkdirSync(instDir, { recursive: true });
for (const [k, img] of instances.entries())
  writeFileAtomic(
    join(instDir, `blue-apple-${k}.png`),
    encodePng(makeGrid({ data: img, shape: [3, S, S] }, { padding: 0 })),
  );
const instTensor = new HostTensor<"float32">(Float32Array.from(instances.flatMap((a) => [...a])), [
  5,
  3,
  S,
  S,
]);

const judge = await EmojiJudge.load();
const features = async (x: HostTensor) => {
  const j = await judge.classify(x);
  const f = j.features.length / j.n;
  return Array.from({ length: j.n }, (_, i) => j.features.subarray(i * f, (i + 1) * f));
};
const cos = (a: Float32Array, b: Float32Array) => {
  let d = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    d += a[i]! * b[i]!;
    na += a[i]! * a[i]!;
    nb += b[i]! * b[i]!;
  }
  return d / Math.sqrt(na * nb);
};
// the judge's features centred on real emoji: what is left is what sets an image apart
const realIdx = Array.from({ length: 512 }, (_, i) => Math.floor((i * data.count) / 512));
const real = new Float32Array(512 * per);
for (const [k, i] of realIdx.entries()) real.set(data.images.subarray(i * per, (i + 1) * per), k * per);
const rawReal = await features(new HostTensor(real, [512, 3, S, S]));
const centre = new Float32Array(rawReal[0]!.length);
for (const f of rawReal) for (let i = 0; i < f.length; i++) centre[i]! += f[i]! / rawReal.length;
const centred = async (x: HostTensor) =>
  (await features(x)).map((f) => Float32Array.from(f, (v, i) => v - centre[i]!));
const instFeats = await centred(instTensor);

const pipe = await loadPipeline("emoji");
const opts = samplingDefaults(pipe);
const scheduler = schedulerFor({ name: opts.scheduler, karras: opts.karras }, pipe.schedulerConfig);
const gen = (prompts: string[], seed = 0) =>
  pipelineGenerate(pipe, scheduler, { prompts, steps: opts.steps, guidance: opts.guidance, seed });
const N = 16;
const similarity = async (imgs: HostTensor) => {
  const fs = await centred(imgs);
  let s = 0;
  for (const f of fs) for (const g of instFeats) s += cos(f, g);
  return s / (fs.length * instFeats.length);
};
const prompts = Number(arg("prompts", "100"));
// --eval-only: the run is there; the prior figures of an earlier result.json are kept
const earlier =
  args.includes("--eval-only") && existsSync(join(ROOT, "result.json"))
    ? (
        JSON.parse(readFileSync(join(ROOT, "result.json"), "utf8")) as {
          prior: { base: unknown; lora: unknown };
        }
      ).prior
    : null;
const prior = async (which: "base" | "lora") => {
  if (earlier) return earlier[which] as { identityTop5: number; vendor: number; identityTop1: number };
  const r = await evalEmoji((ps) => gen(ps, 7), { judge, prompts, batchSize: 50 });
  return {
    identityTop5: r.train.identityTop5,
    vendor: r.train.vendorAccuracy,
    identityTop1: r.train.identityTop1,
  };
};

const t0 = performance.now();
const baseImgs = await gen(Array.from({ length: N }, () => INSTANCE));
const baseSim = await similarity(baseImgs);
const basePrior = await prior("base");
console.log(
  `base: similarity ${baseSim.toFixed(4)}, prior top-5 ${(100 * basePrior.identityTop5).toFixed(1)}%`,
);

const tTrain = performance.now();
if (!args.includes("--eval-only"))
  await finetune([
    "--model",
    "emoji",
    "--data",
    instDir,
    "--instance-prompt",
    INSTANCE,
    "--class-prompt",
    CLASS,
    "--class-images",
    arg("class-images", "32"),
    "--rank",
    arg("rank", "4"),
    "--steps",
    arg("steps", "300"),
    "--batch-size",
    "4",
    "--lr",
    arg("lr", "5e-4"),
    "--targets",
    arg("targets", "to_q,to_k,to_v,to_out.0"),
    ...(args.includes("--text-encoder") ? ["--text-encoder"] : []),
    "--set",
    "output.sample_every=100",
    "--set",
    "output.checkpoint_every=100",
    "--out",
    join(ROOT, "run"),
  ]);
const trainMin = (performance.now() - tTrain) / 60000;
await loadLoraWeights(pipe, join(ROOT, "run", "model", "pytorch_lora_weights.safetensors"), {
  adapterName: "zwx",
});
const loraImgs = await gen(Array.from({ length: N }, () => INSTANCE));
const loraSim = await similarity(loraImgs);
const loraPrior = await prior("lora");
const classImgs = await gen(Array.from({ length: 8 }, () => CLASS));
setLoraScale(pipe, "zwx", 0);
const classBase = await gen(Array.from({ length: 8 }, () => CLASS));
console.log(
  `lora: similarity ${loraSim.toFixed(4)}, prior top-5 ${(100 * loraPrior.identityTop5).toFixed(1)}%`,
);

const row = (x: HostTensor, k: number) =>
  new HostTensor<"float32">((x.data as Float32Array).slice(0, k * per), [k, 3, S, S]);
const white = new HostTensor<"float32">(new Float32Array(3 * per).fill(1), [3, 3, S, S]);
const rows = [instTensor, white, row(baseImgs, 8), row(loraImgs, 8), row(classBase, 8), row(classImgs, 8)];
const all = new Float32Array(rows.reduce((a, r) => a + r.size, 0));
let at = 0;
for (const r of rows) {
  all.set(r.data as Float32Array, at);
  at += r.size;
}
const result = {
  date: new Date().toISOString(),
  instance_prompt: INSTANCE,
  class_prompt: CLASS,
  steps: Number(arg("steps", "300")),
  train_minutes: args.includes("--eval-only") ? "see the first run" : Number(trainMin.toFixed(1)),
  similarity: { base: baseSim, lora: loraSim },
  prior: { base: basePrior, lora: loraPrior, prompts },
  total_minutes: Number(((performance.now() - t0) / 60000).toFixed(1)),
};
writeFileSync(join(ROOT, "result.json"), `${JSON.stringify(result, null, 2)}\n`);
writeFileAtomic(
  "docs/dreambooth.png",
  encodePng(makeGrid({ data: all, shape: [all.length / per, 3, S, S] }, { nrow: 8 }), {
    text: {
      parameters: `rows: 5 instance images (blue apple, made from the green apple emoji); base "${INSTANCE}"; base + LoRA "${INSTANCE}"; base "${CLASS}"; base + LoRA "${CLASS}". ${opts.scheduler} ${opts.steps} steps, guidance ${opts.guidance}`,
    },
  }),
);
console.log(JSON.stringify(result, null, 2));
judge.dispose();
