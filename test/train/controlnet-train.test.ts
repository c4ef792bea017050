/**
 * ControlNet training with `diffuse train` (a `controlnet` section over a frozen tiny text-to-image
 * pipeline), on captioned images whose only difference is where a striped white box sits and how big
 * it is — the caption is the same for all, so only the control edges say where to draw (the random
 * VAE's scaling_factor is set to 1 / its latents' deviation, as Stable Diffusion's was measured, so
 * that the images are more than a trace beside the noise):
 *
 * - step 0 is the base model: a run with learning rate 0 exports a StableDiffusionControlNetPipeline
 *   whose images with control are the base's, whose edge F1 with control equals the F1 without;
 * - a short run uses the edges: the denoising error with each image's own edges falls below the
 *   base's and below the error with another image's edges (the proxy for edge agreement that a
 *   random tiny base can show in seconds: F1 needs a model that draws), and only the ControlNet is
 *   checkpointed;
 * - bad configs are refused with the reason.
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { after, before, test } from "node:test";
import { canny } from "../../src/data/edges.ts";
import { bsdsTolerance, evalControlEdges, pipelineCanny } from "../../src/eval/control-edges.ts";
import { edgeF1 } from "../../src/eval/edges.ts";
import { writePng } from "../../src/io/png.ts";
import { readSafetensors } from "../../src/io/safetensors.ts";
import { controlledDenoiser } from "../../src/models/controlnet/controlled.ts";
import type { UNet2DConditionModel } from "../../src/models/unet-cond/model.ts";
import { disposePipeline, type LoadedPipeline, loadPipeline } from "../../src/pipelines/pipeline-dir.ts";
import { pipelineGenerate } from "../../src/pipelines/run.ts";
import { schedulerFor } from "../../src/pipelines/scheduler-names.ts";
import { promptConditions } from "../../src/pipelines/text-to-image.ts";
import { Scheduler } from "../../src/samplers/scheduler.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import { Rng } from "../../src/tensor/rng.ts";
import { resolveConfig } from "../../src/train/config.ts";
import { withBaseSections } from "../../src/train/controlnet-task.ts";
import { makeTinySd } from "../support/tiny-sd.ts";
import { trainLogged } from "../support/train-run.ts";

const CAPTION = "a white square on a black background";
const N = 8;
const S = 16;
let sd: string;
let root: string;
let data: string;
let boxes: HostTensor<"float32">;

before(async () => {
  sd = await makeTinySd();
  root = dirname(sd);
  data = join(root, "boxes");
  mkdirSync(data);
  const all = new Float32Array(N * 3 * S * S);
  const rows: string[] = [];
  for (let k = 0; k < N; k++) {
    // a filled white box, 5 or 7 pixels wide, in one of the four quadrants, on black
    const side = k < 4 ? 7 : 5;
    const x0 = (k % 2) * 8 + 1;
    const y0 = (Math.floor(k / 2) % 2) * 8 + 1;
    const px = new Uint8Array(S * S * 3);
    for (let y = y0; y < Math.min(S, y0 + side); y++)
      for (let x = x0; x < Math.min(S, x0 + side); x++) {
        if (Math.floor((x - x0) / 2) % 2 === 1) continue; // striped: edges all over the box
        px.fill(255, (y * S + x) * 3, (y * S + x + 1) * 3);
        for (let c = 0; c < 3; c++) all[(k * 3 + c) * S * S + y * S + x] = 1;
      }
    writePng(join(data, `box-${k}.png`), { width: S, height: S, channels: 3, data: px });
    rows.push(JSON.stringify({ file_name: `box-${k}.png`, text: CAPTION }));
  }
  writeFileSync(join(data, "metadata.jsonl"), `${rows.join("\n")}\n`);
  boxes = new HostTensor(all, [N, 3, S, S]);
  // the random VAE's scaling_factor set as Stable Diffusion's was: 1 / the latents' standard deviation
  // (diffusers' default 0.18215 would leave these latents at rms 0.05: nothing to learn beside the noise)
  const pipe = await loadPipeline(sd);
  try {
    const z = (
      await pipe.vae!.encode(
        new HostTensor(
          Float32Array.from(all, (v) => v * 2 - 1),
          boxes.shape,
        ),
      )
    ).mean;
    const rms = Math.sqrt(z.data.reduce((a, v) => a + Number(v) ** 2, 0) / z.size);
    const path = join(sd, "vae", "config.json");
    const json = JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>;
    writeFileSync(path, JSON.stringify({ ...json, scaling_factor: 1 / rms }));
  } finally {
    disposePipeline(pipe);
  }
});
after(() => (process.env["KEEP"] ? console.log(root) : rmSync(root, { recursive: true, force: true })));

/** A ControlNet run over the tiny pipeline, with the base's sections filled in as `diffuse train` does. */
async function config(training: Record<string, unknown>): Promise<Record<string, unknown>> {
  return withBaseSections({
    controlnet: { base: sd, conditioning_embedding_out_channels: [8, 16] },
    data: { dataset: "folder", path: data },
    training: {
      batch_size: 4,
      warmup_steps: 0,
      lr_schedule: "constant",
      ema_decay: 0,
      cond_dropout: 0,
      grad_clip: 1,
      ...training,
    },
    output: { checkpoint_every: 1000, sample_every: 0, log_every: 10, sample_steps: 2, sample_guidance: 2 },
  });
}

/**
 * The error of the predicted clean latents x̂0 = (x_t − σ·ε̂)/α on the boxes' latents at 6 noise
 * levels of the middle of the schedule (noise from a seed training never used), with each box's edges
 * as control (`shift` > 0: another box's), or without control. In x̂0 terms what the edges tell (where
 * the box is) weighs as much at high noise as at low.
 */
async function denoisingError(pipe: LoadedPipeline, shift: number | null): Promise<number> {
  const vae = pipe.vae!;
  const z = (
    await vae.encode(
      new HostTensor(
        Float32Array.from(boxes.data, (v) => v * 2 - 1),
        boxes.shape,
      ),
    )
  ).mean;
  const per = z.size / N;
  const ac = Scheduler.fromConfig(pipe.schedulerConfig).alphasCumprod!;
  const ts = Array.from({ length: 6 }, (_, i) => Math.floor(((i + 2.5) * ac.length) / 10));
  const n = ts.length * N;
  const eps = new Rng(987).normal(n * per);
  const xt = new Float32Array(n * per);
  const tAll: number[] = [];
  const edges = canny(boxes, { channels: 3 });
  const ctl = new Float32Array(n * 3 * S * S);
  for (let k = 0; k < n; k++) {
    const t = ts[k % ts.length]!;
    tAll.push(t);
    const img = Math.floor(k / ts.length);
    const a = Math.sqrt(ac[t]!);
    const s = Math.sqrt(1 - ac[t]!);
    for (let j = 0; j < per; j++)
      xt[k * per + j] = a * z.data[img * per + j]! * vae.scalingFactor + s * eps[k * per + j]!;
    const src = (img + (shift ?? 0)) % N;
    ctl.set(edges.data.subarray(src * 3 * S * S, (src + 1) * 3 * S * S), k * 3 * S * S);
  }
  const { cond } = await promptConditions(
    pipe.text!,
    Array.from({ length: n }, () => CAPTION),
  );
  const x = new HostTensor<"float32">(xt, [n, ...z.shape.slice(1)]);
  const y =
    shift === null
      ? await pipe.denoiser.denoise(x, tAll, cond)
      : await controlledDenoiser(pipe.denoiser as UNet2DConditionModel, pipe.controlnet!).denoise(x, tAll, {
          ...cond,
          control: { image: new HostTensor(ctl, [n, 3, S, S]), scale: 1 },
        });
  let e = 0;
  for (let i = 0; i < y.size; i++) {
    const t = tAll[Math.floor(i / per)]!;
    e += ((y.data[i]! - eps[i]!) ** 2 * (1 - ac[t]!)) / ac[t]!; // (x̂0 − x0)² = (σ/α)²·(ε̂ − ε)²
  }
  return e / y.size;
}

const maxDiff = (a: HostTensor, b: HostTensor) => {
  let m = 0;
  for (let i = 0; i < a.size; i++) m = Math.max(m, Math.abs(Number(a.data[i]) - Number(b.data[i])));
  return m;
};

test("step 0 is the base model: the exported ControlNet pipeline draws the base's images, edge F1 with control = without", async () => {
  const out = join(root, "zero");
  await trainLogged(await config({ steps: 1, lr: 0 }), out);
  const model = join(out, "model");
  const index = JSON.parse(readFileSync(join(model, "model_index.json"), "utf8")) as Record<string, unknown>;
  assert.equal(index["_class_name"], "StableDiffusionControlNetPipeline");
  const info = JSON.parse(readFileSync(join(model, "diffuse.json"), "utf8")) as Record<string, unknown>;
  assert.deepEqual((info["control"] as Record<string, unknown>)["canny"], { sigma: 1, low: 0.05, high: 0.1 });
  const config2 = JSON.parse(readFileSync(join(out, "config.json"), "utf8")) as Record<string, unknown>;
  assert.equal((config2["model"] as Record<string, unknown>)["_class_name"], "UNet2DConditionModel");
  const pipe = await loadPipeline(model);
  const base = await loadPipeline(sd);
  try {
    const edges = canny(boxes, { channels: 3 });
    const prompts = Array.from({ length: 4 }, () => CAPTION);
    const req = { prompts, steps: 2, guidance: 2, seed: 0 };
    const sched = schedulerFor({ name: "ddim" }, base.schedulerConfig);
    const control = { image: new HostTensor<"float32">(edges.data.slice(0, 4 * 3 * S * S), [4, 3, S, S]) };
    const plain = await pipelineGenerate(base, sched, req);
    assert.ok(maxDiff(await pipelineGenerate(pipe, sched, { ...req, control }), plain) < 1e-5);
    const r = await evalControlEdges(pipe, control.image, prompts, {
      scheduler: "ddim",
      steps: 2,
      guidance: 2,
      tolerances: [0, bsdsTolerance(S), 3],
    });
    assert.equal(r.n, 4);
    assert.ok(Math.abs(r.withControl.f1 - r.without.f1) < 1e-9, JSON.stringify(r));
    // one generation pass scored at each tolerance: the first row is the report's own figures, and a
    // wider tolerance never matches fewer pixels
    assert.deepEqual(
      r.rows.map((row) => row.tolerance),
      [2, 0, bsdsTolerance(S), 3],
    );
    assert.deepEqual(r.rows[0]!.without, r.without);
    assert.deepEqual(r.rows[0]!.unpaired, r.unpaired);
    // chance: each image made without control against the edges of the pair half the set away
    const plainEdges = canny(plain, pipelineCanny(pipe));
    const one = S * S;
    const shifted = new Float32Array(4 * one);
    for (let i = 0; i < 4; i++)
      shifted.set(edges.data.subarray(((i + 2) % 4) * 3 * one, ((i + 2) % 4) * 3 * one + one), i * one);
    const chance = edgeF1(plainEdges, new HostTensor<"float32">(shifted, [4, 1, S, S]), { tolerance: 2 });
    assert.ok(Math.abs(chance.f1 - r.unpaired.f1) < 1e-12, `${chance.f1} vs ${r.unpaired.f1}`);
    const byTol = [...r.rows].sort((a, b) => a.tolerance - b.tolerance);
    for (let i = 1; i < byTol.length; i++)
      for (const k of ["withControl", "without", "unpaired"] as const) {
        assert.ok(byTol[i]![k].recall >= byTol[i - 1]![k].recall - 1e-12, k);
        assert.ok(byTol[i]![k].precision >= byTol[i - 1]![k].precision - 1e-12, k);
      }
    assert.match(r.settings, /scheduler: ddim, steps: 2, guidance: 2/);
  } finally {
    disposePipeline(pipe);
    disposePipeline(base);
  }
});

test("a short run learns to use the edges: its own edges denoise better than the base and than another box's edges", async () => {
  const out = join(root, "learn");
  const logs = await trainLogged(await config({ steps: 150, lr: 1e-2, batch_size: 8 }), out);
  assert.ok(logs.length > 0 && logs.every((l) => Number.isFinite(l.loss)));
  // the checkpoint holds the ControlNet alone
  const ckpt = readSafetensors(
    join(out, "checkpoint", "controlnet", "diffusion_pytorch_model.safetensors"),
  ).tensors;
  assert.ok([...ckpt.keys()].some((k) => k.startsWith("controlnet_down_blocks.")));
  assert.ok(!existsSync(join(out, "checkpoint", "unet")));
  const pipe = await loadPipeline(join(out, "model"));
  try {
    const base = await denoisingError(pipe, null);
    const own = await denoisingError(pipe, 0);
    const other = (await denoisingError(pipe, 3)) / 2 + (await denoisingError(pipe, 5)) / 2;
    assert.ok(own < base * 0.95, `own edges ${own} vs the base ${base}`);
    assert.ok(own < other * 0.995, `own edges ${own} vs another box's ${other}`);
  } finally {
    disposePipeline(pipe);
  }
});

test("a run goes on from a trained ControlNet (init_from), on re-laid-out images", async () => {
  const from = join(root, "learn", "model");
  const out = join(root, "relaid");
  const good = await config({ steps: 3, lr: 0 });
  const cn = good["controlnet"] as Record<string, unknown>;
  const logs = await trainLogged(
    { ...good, controlnet: { ...cn, init_from: from, layout_prob: 1, layout_min_scale: 0.5 } },
    out,
  );
  assert.ok(logs.length > 0 && logs.every((l) => Number.isFinite(l.loss)));
  // at learning rate 0 the export is the ControlNet it started from, not a fresh copy of the encoder
  const file = join("controlnet", "diffusion_pytorch_model.safetensors");
  const started = readSafetensors(join(from, file)).tensors;
  const ended = readSafetensors(join(out, "model", file)).tensors;
  const fresh = readSafetensors(join(root, "zero", "model", file)).tensors;
  const key = [...started.keys()].find((k) => k.startsWith("controlnet_down_blocks."))!;
  assert.equal(maxDiff(ended.get(key)!, started.get(key)!), 0);
  assert.ok(
    maxDiff(fresh.get(key)!, started.get(key)!) > 0,
    "the trained ControlNet differs from a fresh one",
  );
  // a ControlNet of another shape is refused, naming the tensor
  await assert.rejects(
    trainLogged(
      { ...good, controlnet: { ...cn, init_from: from, conditioning_embedding_out_channels: [4, 16] } },
      join(root, "mismatch"),
    ),
    /init_from .* is not a ControlNet for this base: controlnet_cond_embedding\.[^ ]+ is /,
  );
  await assert.rejects(
    trainLogged({ ...good, controlnet: { ...cn, init_from: join(root, "nowhere") } }, join(root, "none")),
    /controlnet\.init_from .*nowhere/,
  );
});

test("bad ControlNet configs are refused with the reason", async () => {
  const good = await config({ steps: 1 });
  const withCn = (c: Record<string, unknown>) => ({
    ...good,
    controlnet: { ...(good["controlnet"] as Record<string, unknown>), ...c },
  });
  assert.throws(() => resolveConfig(withCn({ canny_high: 0.01 })), /controlnet.canny_high.*≥ canny_low/);
  assert.throws(
    () => resolveConfig(withCn({ conditioning_embedding_out_channels: [] })),
    /conditioning_embedding_out_channels/,
  );
  assert.throws(() => resolveConfig(withCn({ strength: 1 })), /unknown config field "controlnet.strength"/);
  assert.throws(() => resolveConfig(withCn({ layout_prob: 2 })), /controlnet.layout_prob.*from 0 to 1/);
  assert.throws(() => resolveConfig(withCn({ layout_min_scale: 0 })), /controlnet.layout_min_scale/);
  assert.throws(() => resolveConfig(withCn({ init_from: "" })), /controlnet.init_from/);
  assert.throws(
    () => resolveConfig({ ...good, finetune: { base: sd } }),
    /"finetune" or a "controlnet" run, not both/,
  );
  const { text_encoder: _t, ...noText } = good;
  assert.throws(() => resolveConfig(noText), /controlnet|text/);
  // the embedding must bring the image down to the latents: 2 entries for the tiny VAE's factor 2
  await assert.rejects(
    trainLogged(withCn({ conditioning_embedding_out_channels: [8, 16, 32] }), join(root, "bad")),
    /has 3 entries.*log2\(2\) \+ 1 = 2/,
  );
  await assert.rejects(withBaseSections({ controlnet: { base: join(root, "nowhere") } }), /nowhere/);
});
