/**
 * Bundles a trained emoji text-to-image run as one of the package's ready models (assets/models/<name>):
 * loads the run's exported EMA pipeline, scores it with `diffuse eval`'s emoji judge on training
 * captions and held-out compositions at the given settings, and writes the pipeline folder with F16
 * weights, diffuse.json (recommended settings, prompt template, both stages' training configs and
 * times, eval figures) and a model card (README.md). A U-Net run (UNet2DConditionModel) is bundled as a
 * StableDiffusionPipeline (`emoji`), an MM-DiT run (SD3Transformer2DModel) as a
 * StableDiffusion3Pipeline (`emoji-mmdit`).
 *
 *   node --import tsx scripts/bundle-emoji.ts runs/emoji --vae-run runs/emoji-vae [--name emoji]
 *     [--vae-ft-run runs/emoji-vae-ft] [--prompts 500] [--scheduler dpm++2m] [--steps 25]
 *     [--guidance 4] [--vae-minutes M] [--vae-ft-minutes M] [--unet-minutes M] [--cpu TEXT]
 *
 * `--vae-ft-run`: a decoder fine-tune of the VAE (configs/emoji-vae-ft.json: the encoder frozen, so
 * the latents the denoiser learned are unchanged) whose exported model replaces the run's VAE.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type EmojiEvalResult, evalEmoji, formatEmojiReport } from "../src/eval/emoji-eval.ts";
import { replaceDirAtomicAsync } from "../src/io/atomic.ts";
import { CLIPTextModelWithProjection } from "../src/models/text/clip-text-model.ts";
import { AutoencoderKL } from "../src/models/vae/model.ts";
import { parametersText, type SamplingOptions } from "../src/pipelines/options.ts";
import { assetsDir, loadPipeline, saveTextToImagePipeline } from "../src/pipelines/pipeline-dir.ts";
import { pipelineGenerate } from "../src/pipelines/run.ts";
import { schedulerFor } from "../src/pipelines/scheduler-names.ts";
import { SD3_PIPELINE, saveSd3Pipeline } from "../src/pipelines/sd3-pipeline.ts";

const [run, ...rest] = process.argv.slice(2);
if (!run)
  throw new Error(
    "usage: bundle-emoji.ts <run dir> --vae-run <dir> [--prompts N] [--steps N] [--guidance W]",
  );
const arg = (name: string): string | undefined => {
  const i = rest.indexOf(`--${name}`);
  return i >= 0 ? rest[i + 1] : undefined;
};
const vaeRun = arg("vae-run") ?? "runs/emoji-vae";
const opts: SamplingOptions = {
  scheduler: arg("scheduler") ?? "dpm++2m",
  karras: false,
  steps: Number(arg("steps") ?? 25),
  guidance: Number(arg("guidance") ?? 4),
  guidanceRescale: 0,
  eta: 0,
  seed: 0,
};
const prompts = Number(arg("prompts") ?? 500);
const name = arg("name") ?? "emoji";
if (!/^[a-z0-9-]+$/.test(name)) throw new Error(`--name ${name}: use lower-case letters, digits and dashes`);
const TEMPLATE = "<name>[, <tone> skin tone | , <tone1> and <tone2> skin tones], <vendor> style";
const EXAMPLES = [
  "thumbs up sign, medium skin tone, google style",
  "grinning face, twitter style",
  "red apple, google style",
  "father christmas, light skin tone, twitter style",
];

const pipe = await loadPipeline(join(run, "model"));
const mmdit = pipe.pipelineClass === SD3_PIPELINE;
const vaeFtRun = arg("vae-ft-run");
if (vaeFtRun) {
  const ft = await AutoencoderKL.fromPretrained(join(vaeFtRun, "model"));
  if (ft.scalingFactor !== pipe.vae!.scalingFactor)
    throw new Error(
      `${vaeFtRun}: its scaling_factor differs from the run's VAE: not a decoder fine-tune of it`,
    );
  pipe.vae!.dispose();
  pipe.vae = ft;
}
const scheduler = schedulerFor({ name: opts.scheduler }, pipe.schedulerConfig);
let call = 0;
const t0 = performance.now();
const r: EmojiEvalResult = await evalEmoji(
  (ps) =>
    pipelineGenerate(pipe, scheduler, {
      prompts: ps,
      steps: opts.steps,
      guidance: opts.guidance,
      seed: opts.seed + call++,
    }),
  {
    prompts,
    batchSize: 64,
    range: "0,1",
    onProgress: (p) => process.stderr.write(`${p.split} ${p.done}/${p.total}\r`),
  },
);
const evalSeconds = (performance.now() - t0) / 1000;
const report = formatEmojiReport(r, `${run} (${parametersText(opts)})`);
console.log(report);

const readJson = (p: string) => JSON.parse(readFileSync(p, "utf8")) as Record<string, unknown>;
const minutes = (name: string) => (arg(name) !== undefined ? Number(arg(name)) : null);
const evalFigures = {
  settings: parametersText(opts),
  prompts: { train: r.trainPrompts.length, holdout: r.holdoutPrompts.length },
  train: r.train,
  holdout: r.holdout,
  evalSeconds,
  date: new Date().toISOString(),
};
const info = {
  ...pipe.info,
  numClasses: null,
  dataset: "emoji (emoji-datasource-twitter and -google 16.0.0, held-out images excluded)",
  sampling: { scheduler: opts.scheduler, steps: opts.steps, guidance: opts.guidance },
  promptTemplate: TEMPLATE,
  promptExamples: EXAMPLES,
  trainedWith: "diffuse train",
  training: {
    vae: readJson(join(vaeRun, "config.json")),
    ...(vaeFtRun ? { vaeDecoder: readJson(join(vaeFtRun, "config.json")) } : {}),
    [mmdit ? "transformer" : "unet"]: readJson(join(run, "config.json")),
    minutes: {
      vae: minutes("vae-minutes"),
      ...(vaeFtRun ? { vaeDecoder: minutes("vae-ft-minutes") } : {}),
      unetAndTextEncoder: minutes("unet-minutes"),
    },
    cpu: arg("cpu") ?? null,
  },
  eval: evalFigures,
};
const pct = (v: number) => `${(100 * v).toFixed(1)}%`;
const intro = mmdit
  ? `# ${name} — a Stable-Diffusion-3-format text-to-image transformer (MM-DiT) trained from scratch by diffuse

A \`StableDiffusion3Pipeline\` folder in diffusers' layout (F16 weights): a CLIP BPE tokenizer and one
\`CLIPTextModelWithProjection\` (\`tokenizer/\`, \`text_encoder/\`; \`text_encoder_2\` and the T5 are null),
an \`SD3Transformer2DModel\` (joint image–text attention blocks, adaLN-Zero; \`transformer/\`) working on
4×16×16 latents, the bundled \`emoji\` model's \`AutoencoderKL\` (64×64×3 ↔ 4×16×16, \`vae/\`) and a
\`FlowMatchEulerDiscreteScheduler\` (rectified flow, \`scheduler/\`). Every part was trained by diffuse, in
TypeScript, on a CPU. diffusers loads each component of this folder, but its StableDiffusion3Pipeline
always runs a second text encoder: diffuse reads the null one as "one CLIP" (src/pipelines/sd3-pipeline.ts).
`
  : `# ${name} — a Stable-Diffusion-format text-to-image model trained from scratch by diffuse

A complete \`StableDiffusionPipeline\` folder in diffusers' layout (F16 weights): a CLIP BPE tokenizer
and \`CLIPTextModel\` (\`tokenizer/\`, \`text_encoder/\`), a \`UNet2DConditionModel\` working on 4×16×16
latents (\`unet/\`), an \`AutoencoderKL\` (64×64×3 ↔ 4×16×16, \`vae/\`) and a v-prediction
\`DDPMScheduler\` (\`scheduler/\`). Every part — tokenizer, text encoder, U-Net and VAE — was trained by
diffuse, in TypeScript, on a CPU.
`;
const ftLine = vaeFtRun
  ? "npx diffuse train --config configs/emoji-vae-ft.json --out runs/emoji-vae-ft # its decoder fine-tuned (MSE), the encoder frozen\n"
  : "";
const ftArg = vaeFtRun ? " --vae-ft-run runs/emoji-vae-ft" : "";
const ftNote = vaeFtRun
  ? " The VAE's decoder was then fine-tuned on the MSE with its encoder frozen (configs/emoji-vae-ft.json), so the latents the denoiser learned are unchanged."
  : "";
const vaeMinutes = `${minutes("vae-minutes") ?? "?"} min${vaeFtRun ? ` + ${minutes("vae-ft-minutes") ?? "?"} min for the decoder` : ""}`;
const made = mmdit
  ? `\`\`\`sh
npx diffuse train --config configs/emoji-vae.json --out runs/emoji-vae     # the VAE (shared with emoji)
npx diffuse train --config configs/emoji-mmdit.json --out runs/emoji-mmdit # the MM-DiT and its text encoder, jointly
${ftLine}node --import tsx scripts/bundle-emoji.ts runs/emoji-mmdit --vae-run runs/emoji-vae${ftArg} --name ${name}
\`\`\`

The tokenizer is learned (byte-level BPE) from the training captions at the start of the second run;
the text encoder is trained from scratch jointly with the transformer by the rectified-flow loss
(logit-normal times, shift 3; one ONNX graph), with 10% of captions replaced by the empty prompt for
classifier-free guidance.${ftNote} Training time: VAE ${vaeMinutes}, MM-DiT + text encoder ${minutes("unet-minutes") ?? "?"} min${
      arg("cpu") ? ` (${arg("cpu")})` : ""
    }.`
  : `\`\`\`sh
npx diffuse train --config configs/emoji-vae.json --out runs/emoji-vae   # the VAE
npx diffuse train --config configs/emoji.json --out runs/emoji           # the U-Net and its text encoder, jointly
${ftLine}node --import tsx scripts/bundle-emoji.ts runs/emoji --vae-run runs/emoji-vae${ftArg}
\`\`\`

The tokenizer is learned (byte-level BPE) from the training captions at the start of the second run;
the text encoder is trained from scratch jointly with the U-Net through the denoising loss (one ONNX
graph), with 10% of captions replaced by the empty prompt for classifier-free guidance.${ftNote}
Training time: VAE ${vaeMinutes}, U-Net + text encoder ${minutes("unet-minutes") ?? "?"} min${
      arg("cpu") ? ` (${arg("cpu")})` : ""
    }.`;
const card = `${intro}
## Prompts

One template, the one it was trained on: \`${TEMPLATE}\`, where \`<name>\` is the emoji's Unicode name
lower-cased, tones are light, medium-light, medium, medium-dark or dark, and \`<vendor>\` is
\`twitter\` or \`google\`. Examples:

${EXAMPLES.map((e) => `- "${e}"`).join("\n")}

\`\`\`sh
npx diffuse sample --model ${name} --prompt "${EXAMPLES[0]}" --out out/${name}
\`\`\`

Recommended settings (in diffuse.json, used by the CLI and the studio): ${opts.scheduler}, ${opts.steps}
steps, guidance ${opts.guidance}.

## Data and licences

The 64×64 emoji images of the npm packages \`emoji-datasource-twitter\` and \`emoji-datasource-google\`
16.0.0 (iamcal/emoji-data), composited on white: 7,572 images of 3,786 emoji, less the 475 held-out
images of \`assets/data/emoji-holdout.json\` (never trained on; they test composition: an emoji seen
in one vendor's style only, asked for in the other's).

- Twemoji graphics (jdecked/twemoji 16.0.1) © Twitter, Inc and other contributors, licensed under
  [CC-BY 4.0](https://creativecommons.org/licenses/by/4.0/). This model is trained on them; credit
  them wherever its images are shown.
- Noto Emoji images (googlefonts/noto-emoji) under the [Apache License 2.0](https://www.apache.org/licenses/LICENSE-2.0);
  its flags are public domain.
- emoji-data's data files and code: MIT (Cal Henderson).

## How it was made

${made}

## Evaluation

\`diffuse eval --model ${name}\` (the project's emoji judge; ${opts.scheduler}, ${opts.steps} steps, guidance
${opts.guidance}, one image per prompt):

| | training prompts (${r.trainPrompts.length}) | held-out compositions (${r.holdoutPrompts.length}) |
|---|---|---|
| identity top-1 | ${pct(r.train.identityTop1)} | ${pct(r.holdout.identityTop1)} |
| identity top-5 | ${pct(r.train.identityTop5)} | ${pct(r.holdout.identityTop5)} |
| vendor accuracy | ${pct(r.train.vendorAccuracy)} | ${pct(r.holdout.vendorAccuracy)} |
| Fréchet distance (judge features) | ${r.train.frechet.toFixed(1)} | ${r.holdout.frechet.toFixed(1)} |

\`\`\`
${report}
\`\`\`
`;
const dest = join(assetsDir(), "models", name);
await replaceDirAtomicAsync(dest, async (tmp) => {
  if (mmdit) {
    const te = pipe.text!.textEncoder;
    if (!(te instanceof CLIPTextModelWithProjection) || pipe.text!.sd3?.second)
      throw new Error(`${run}: an MM-DiT emoji run has one CLIPTextModelWithProjection`);
    await saveSd3Pipeline(tmp, {
      transformer: pipe.denoiser,
      textEncoder: te,
      tokenizer: pipe.text!.tokenizer,
      vae: pipe.vae!,
      schedulerConfig: pipe.schedulerConfig,
      info,
      dtype: "F16",
    });
  } else
    await saveTextToImagePipeline(tmp, {
      unet: pipe.denoiser,
      textEncoder: pipe.text!.textEncoder,
      tokenizer: pipe.text!.tokenizer,
      vae: pipe.vae!,
      schedulerConfig: pipe.schedulerConfig,
      info,
      dtype: "F16",
    });
  writeFileSync(join(tmp, "README.md"), card);
});
console.log(`bundled → ${dest}`);
