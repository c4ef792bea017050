/**
 * Interoperability check of a StableDiffusionPipeline folder (Rombach et al. 2022) with Hugging Face
 * diffusers itself: does a folder diffuse wrote load in diffusers, and do diffusers' networks compute
 * what diffuse computes from it?
 *
 * This side loads the folder with diffuse (loadPipeline) and runs, on fixed random inputs (Rng(seed)):
 *   unet          UNet2DConditionModel.forward(sample [2, C, h, w], timesteps [999, 37], text states
 *                 [2, L, cross_attention_dim])                         → unet.out
 *   vae           AutoencoderKL.encode(image [2, 3, H, W] in [−1, 1])  → vae.mean, vae.logvar
 *                 AutoencoderKL.decode(latent [2, latent, h, w])       → vae.decoded
 *   tokenizer     CLIPTokenizer.tokenize(prompts), padded to the context, truncated → text.input_ids
 *   text_encoder  CLIPTextModel.forward(those ids)                     → text.last_hidden_state, text.pooler_output
 * (h, w: the U-Net's sample_size; H, W: that times the VAE's factor — what the pipeline generates), writes
 * inputs and outputs to one safetensors file, then runs scripts/check_diffusers_interop.py, which loads the
 * same folder with diffusers' from_pretrained (in float32), recomputes every output from the stored
 * inputs and prints max|a−b|/max|ref| per output: PASS at ≤ 1e-4. Exit status: the Python script's
 * (1 on any FAIL, 2 when diffusers cannot be set up).
 *
 *   node --import tsx scripts/check-diffusers-interop.ts DIR [--seed N] [--out FILE.safetensors] [--tol 1e-4]
 *
 * DIR: a pipeline folder, a run folder (its model/), or a bundled model's name (e.g. emoji).
 * Needs /usr/bin/python3 with torch (Debian's python3-torch) and the vendored diffusers of
 * shared/bench (see check_diffusers_interop.py); PYTHON overrides the interpreter.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { writeSafetensors } from "../src/io/safetensors.ts";
import { CLIPTextModelWithProjection } from "../src/models/text/clip-text-model.ts";
import { disposePipeline, loadPipeline } from "../src/pipelines/pipeline-dir.ts";
import { HostTensor } from "../src/tensor/host.ts";
import { Rng } from "../src/tensor/rng.ts";

const here = dirname(fileURLToPath(import.meta.url));
const USAGE =
  "usage: node --import tsx scripts/check-diffusers-interop.ts DIR [--seed N] [--out FILE.safetensors] [--tol 1e-4]";

/** Prompts for the tokenizer and text encoder: plain, cased and punctuated, unseen words, over-long. */
const FIXED_PROMPTS = [
  "",
  "A Red Circle, on a WHITE background!",
  "a zebra-striped émoji with 3 hearts :)",
  Array.from({ length: 40 }, (_, i) => `word${i % 7}`).join(" "),
];

interface Args {
  dir: string;
  seed: number;
  out: string | null;
  tol: string;
}

function parseArgs(argv: readonly string[]): Args {
  const args: Args = { dir: "", seed: 0, out: null, tol: "1e-4" };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value\n${USAGE}`);
      return v;
    };
    if (a === "--seed") {
      args.seed = Number(value());
      if (!Number.isSafeInteger(args.seed)) throw new Error(`--seed must be an integer, got ${argv[i]}`);
    } else if (a === "--out") args.out = resolve(value());
    else if (a === "--tol") args.tol = value();
    else if (a.startsWith("--")) throw new Error(`unknown option ${a}\n${USAGE}`);
    else if (args.dir) throw new Error(`one folder at a time: got ${args.dir} and ${a}\n${USAGE}`);
    else args.dir = a;
  }
  if (!args.dir) throw new Error(USAGE);
  return args;
}

const normal = (rng: Rng, shape: readonly number[]): HostTensor<"float32"> =>
  new HostTensor(rng.normal(shape.reduce((a, b) => a * b, 1)), shape);

const intConfig = (cfg: Record<string, unknown>, key: string, where: string): number => {
  const v = cfg[key];
  if (typeof v !== "number" || !Number.isInteger(v))
    throw new Error(`${where}: ${key} must be an integer, got ${JSON.stringify(v)}`);
  return v;
};

const args = parseArgs(process.argv.slice(2));
const pipe = await loadPipeline(args.dir);
const tensors: Record<string, HostTensor> = {};
let prompts: string[] = [];
try {
  if (pipe.pipelineClass !== "StableDiffusionPipeline" || !pipe.text || !pipe.vae) {
    throw new Error(
      `${pipe.dir} is a ${pipe.pipelineClass}; this check is for StableDiffusionPipeline folders (unet/, vae/, text_encoder/, tokenizer/)`,
    );
  }
  const rng = new Rng(args.seed);
  const unetCfg = pipe.denoiser.config as Record<string, unknown>;
  const vaeCfg = pipe.vae.diffusersConfig as Record<string, unknown>;
  const teCfg = pipe.text.textEncoder.config as Record<string, unknown>;
  const n = 2;
  const side = intConfig(unetCfg, "sample_size", `${pipe.dir}/unet/config.json`);
  const channels = intConfig(unetCfg, "in_channels", `${pipe.dir}/unet/config.json`);
  const crossDim = intConfig(unetCfg, "cross_attention_dim", `${pipe.dir}/unet/config.json`);
  const context = intConfig(teCfg, "max_position_embeddings", `${pipe.dir}/text_encoder/config.json`);
  const levels = (vaeCfg["block_out_channels"] as unknown[]).length;
  const imageSide = side * 2 ** (levels - 1);
  const latentChannels = intConfig(vaeCfg, "latent_channels", `${pipe.dir}/vae/config.json`);
  const inChannels = intConfig(vaeCfg, "in_channels", `${pipe.dir}/vae/config.json`);

  // U-Net: ε(x_t, t, text states) at a late and an early timestep
  const sample = normal(rng, [n, channels, side, side]);
  const timesteps = [999, 37];
  const states = normal(rng, [n, context, crossDim]);
  tensors["unet.sample"] = sample;
  tensors["unet.timestep"] = HostTensor.int64(timesteps);
  tensors["unet.encoder_hidden_states"] = states;
  tensors["unet.out"] = await pipe.denoiser.forward(sample, timesteps, { encoderHiddenStates: states });

  // VAE: the posterior of images, and the decoder on random latents
  const image = new HostTensor<"float32">(rng.uniform(n * inChannels * imageSide * imageSide, -1, 1), [
    n,
    inChannels,
    imageSide,
    imageSide,
  ]);
  const posterior = await pipe.vae.encode(image);
  const latent = normal(rng, [n, latentChannels, side, side]);
  tensors["vae.image"] = image;
  tensors["vae.mean"] = posterior.mean;
  tensors["vae.logvar"] = posterior.logvar;
  tensors["vae.latent"] = latent;
  tensors["vae.decoded"] = await pipe.vae.decode(latent);

  // tokenizer and text encoder: the model's own example prompts plus a few hard ones
  const examples = Array.isArray(pipe.info["promptExamples"])
    ? (pipe.info["promptExamples"] as unknown[]).filter((p): p is string => typeof p === "string").slice(0, 3)
    : [];
  prompts = [...examples, ...FIXED_PROMPTS];
  const { inputIds } = pipe.text.tokenizer.tokenize(prompts, { padding: "max_length", truncation: true });
  const ids = HostTensor.int64(inputIds.flat(), [inputIds.length, context]);
  tensors["text.input_ids"] = ids;
  const enc = pipe.text.textEncoder;
  if (enc instanceof CLIPTextModelWithProjection) {
    const out = await enc.forward(ids);
    tensors["text.last_hidden_state"] = out.lastHiddenState;
    tensors["text.text_embeds"] = out.textEmbeds;
  } else {
    const out = await enc.forward(ids);
    tensors["text.last_hidden_state"] = out.lastHiddenState;
    tensors["text.pooler_output"] = out.poolerOutput;
  }
} finally {
  disposePipeline(pipe);
}

const tmp = args.out ? null : mkdtempSync(join(tmpdir(), "diffuse-interop-"));
const file = args.out ?? join(tmp!, "diffuse-outputs.safetensors");
writeSafetensors(file, tensors, {
  metadata: { producer: "diffuse scripts/check-diffusers-interop.ts", prompts: JSON.stringify(prompts) },
});
console.log(`diffuse: ran ${pipe.dir} on seed ${args.seed}; inputs and outputs in ${file}`);
const python = process.env["PYTHON"] ?? "/usr/bin/python3";
const r = spawnSync(python, [join(here, "check_diffusers_interop.py"), pipe.dir, file, "--tol", args.tol], {
  stdio: "inherit",
});
if (tmp) rmSync(tmp, { recursive: true, force: true });
if (r.error)
  throw new Error(`could not run ${python}: ${r.error.message} (set PYTHON to a python3 with torch)`);
process.exitCode = r.status ?? 1;
