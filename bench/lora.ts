/**
 * `npm run bench -- lora`: a fine-tuning step of the bundled emoji U-Net (assets/models/emoji/unet,
 * UNet2DConditionModel, 16×16×4 latents, cross-attention to 77×128 text) two ways, each in its own
 * process (so that each peak RSS is its own), same batch, same data:
 *   full  every U-Net weight trained: forward, backward to all weights, AdamW on all of them;
 *   lora  LoRA rank 4 (alpha 4) on to_q/to_k/to_v/to_out.0, the base frozen: the base weights are
 *         fed to the step (frozenAs "inputs", what diffuse finetune does) and get no gradients but
 *         those of the adapted projections, no moments; AdamW on A and B alone;
 *   lora-const  the same with the base weights embedded as constants of the step's graph (ONNX
 *         Runtime then holds them and pre-packed copies: more memory).
 * The text embeddings are a batch input (no text encoder in the step) and the EMA is off, in both.
 * Ends with `lora vs full: speed=<full step time / lora step time> rss=<lora peak / full peak>` (the
 * line before: the embedded variant).
 * Options: --iters N (default 10), --batch N (default 16), --threads N.
 */
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { loadModel } from "../src/models/load.ts";
import { loraLayerNames } from "../src/models/lora/index.ts";
import { loraTargets, UNET_LORA_TARGETS, uniformLoraPlan } from "../src/nn/lora.ts";
import { Scheduler } from "../src/samplers/scheduler.ts";
import { HostTensor } from "../src/tensor/host.ts";
import { initParams } from "../src/tensor/params.ts";
import { Rng } from "../src/tensor/rng.ts";
import { batchSpecs, diffusionLoss, drawBatch } from "../src/train/objective.ts";
import { compileTrainStep, paramSpecsOf } from "../src/train/train-step.ts";
import { type ChildResult, timeChild } from "./compare.ts";
import { load1 } from "./timing.ts";

const file = fileURLToPath(import.meta.url);
const UNET = join(fileURLToPath(new URL("..", import.meta.url)), "assets", "models", "emoji", "unet");
const RANK = 4;

type Mode = "full" | "lora" | "lora-const";

interface Opts {
  iters: number;
  batch: number;
  threads: number | null;
}

function parse(args: readonly string[]): { o: Opts; child: Mode | null } {
  const o: Opts = { iters: 10, batch: 16, threads: null };
  let child: Mode | null = null;
  for (let i = 0; i < args.length; i += 2) {
    const [k, v] = [args[i], args[i + 1]];
    const n = Number(v);
    if (k === "--child" && (v === "full" || v === "lora" || v === "lora-const")) child = v;
    else if (k === "--iters" && Number.isInteger(n) && n >= 1) o.iters = n;
    else if (k === "--batch" && Number.isInteger(n) && n >= 1) o.batch = n;
    else if (k === "--threads" && Number.isInteger(n) && n >= 1) o.threads = n;
    else
      throw new Error(`bench lora: bad option ${k} ${v ?? ""} (options: --iters N, --batch N, --threads N)`);
  }
  return { o, child };
}

async function childRun(mode: Mode, o: Opts): Promise<ChildResult> {
  const unet = await loadModel(UNET);
  const model = unet.bound;
  const size = model.geometry.sampleSize!;
  const c = model.geometry.inChannels;
  const session = o.threads ? { threads: o.threads } : {};
  const specs = batchSpecs(model, o.batch, size);
  const loss = diffusionLoss(model);
  const plan =
    mode !== "full" ? uniformLoraPlan({ rank: RANK, alpha: RANK, targets: UNET_LORA_TARGETS }) : undefined;
  const step = await compileTrainStep(loss, specs, {
    adamw: { weightDecay: 0.01 },
    ema: false,
    session,
    ...(plan
      ? {
          frozen: new Map(unet.params),
          lora: plan,
          frozenAs: mode === "lora" ? "inputs" : "constants",
        }
      : {}),
  });
  let trainable = new Map(unet.params);
  if (plan) {
    // the adapters' specs, as the step declared them (A: PyTorch's init, B: zeros)
    const all = paramSpecsOf(
      (s, g) => {
        const inputs: Record<string, ReturnType<typeof g.input>> = {};
        for (const [k, v] of Object.entries(specs)) inputs[k] = g.input(k, v.shape, v.dtype ?? "float32");
        return loss(s, inputs);
      },
      { lora: plan },
    );
    trainable = initParams(
      all.filter((s) => /\.lora_[AB]\./.test(s.name)),
      new Rng(0),
    );
    const adapted = loraLayerNames(unet.params).filter(loraTargets(UNET_LORA_TARGETS)).length;
    console.error(
      `lora: ${adapted} layers adapted, ${[...trainable.values()].reduce((a, t) => a + t.size, 0)} trainable values`,
    );
  }
  const state = step.initState(trainable);
  const sched = Scheduler.fromConfig({
    _class_name: "DDPMScheduler",
    beta_schedule: "scaled_linear",
    beta_start: 0.00085,
    beta_end: 0.012,
  });
  const obj = {
    prediction: "v" as const,
    alphasCumprod: sched.alphasCumprod,
    numTrainTimesteps: 1000,
    weighting: { kind: "uniform" as const },
    timesteps: { kind: "uniform" as const },
    nullLabel: null,
    condDropout: 0,
  };
  const rng = new Rng(2);
  const dim = Number(unet.config["cross_attention_dim"]);
  const batches = Array.from({ length: 3 }, (_, i) => {
    const x0 = new HostTensor<"float32">(rng.normal(o.batch * c * size * size), [o.batch, c, size, size]);
    const feeds = drawBatch(obj, x0, null, rng.fold(i));
    feeds["cond.encoder_hidden_states"] = new HostTensor(rng.normal(o.batch * 77 * dim), [o.batch, 77, dim]);
    return feeds;
  });
  return timeChild(
    o.batch,
    o.iters,
    async () => {
      for (let i = 0; i < 3; i++) await step.step(state, batches[i]!, 1e-4);
    },
    (i) => step.step(state, batches[i % 3]!, 1e-4),
  );
}

function spawnChild(mode: Mode, o: Opts): ChildResult {
  const args = [
    "--iters",
    `${o.iters}`,
    "--batch",
    `${o.batch}`,
    ...(o.threads ? ["--threads", `${o.threads}`] : []),
  ];
  const r = spawnSync(process.execPath, ["--import", "tsx", file, "--child", mode, ...args], {
    encoding: "utf8",
    maxBuffer: 1 << 24,
  });
  if (r.status !== 0) throw new Error(`bench lora ${mode} failed:\n${r.stderr}`);
  if (r.stderr.trim())
    console.log(
      r.stderr
        .trim()
        .split("\n")
        .filter((l) => !l.startsWith("npm warn"))
        .join("\n"),
    );
  return JSON.parse(r.stdout.trim().split("\n").pop()!) as ChildResult;
}

export async function main(args: readonly string[]): Promise<void> {
  const { o, child } = parse(args);
  if (child) {
    console.log(JSON.stringify(await childRun(child, o)));
    return;
  }
  console.log(
    `date ${new Date().toISOString()}, emoji U-Net fine-tuning step, batch ${o.batch}, ${o.iters} timed steps, threads ${o.threads ?? "all"}, load ${load1().toFixed(2)}`,
  );
  const full = spawnChild("full", o);
  const lora = spawnChild("lora", o);
  const embedded = spawnChild("lora-const", o);
  for (const [name, r] of [
    ["full", full],
    ["lora (base fed)", lora],
    ["lora (base embedded)", embedded],
  ] as const)
    console.log(
      `${name.padEnd(21)} ${r.medianS.toFixed(3)} s/step  ${r.imagesPerS.toFixed(1)} img/s  peak RSS ${r.peakRssMiB.toFixed(0)} MiB  (others ${r.otherCores.toFixed(2)} cores)`,
    );
  const ratio = (r: ChildResult) =>
    `speed=${(full.medianS / r.medianS).toFixed(2)} rss=${(r.peakRssMiB / full.peakRssMiB).toFixed(2)}`;
  console.log(`lora (base embedded) vs full: ${ratio(embedded)}`);
  console.log(`lora vs full: ${ratio(lora)}`);
}

if (process.argv[1] === file) await main(process.argv.slice(2));
