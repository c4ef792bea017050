/**
 * Latent consistency distillation of a text-to-image teacher: the setting of the LCM paper (Luo et al.
 * 2023, "Latent Consistency Models", Alg. 1 on Stable Diffusion) — the objective of train/lcm.ts on the
 * VAE latents of captioned images, the student (a copy of the teacher's UNet2DConditionModel) and
 * the EMA target conditioned on the caption's embedding c, the teacher's DDIM step guided with ω over
 * [∅ | c], ∅ the empty prompt's embedding (what the teacher learned under condition dropout).
 *
 * Data, as `diffuse train` draws it (text-task.ts): each image's VAE posterior moments computed once
 * and cached in the run folder (latents.safetensors), each step's x₀ = (z − shift)·scale with
 * z ~ N(mean, std²). The text encoder and the VAE stay frozen, so the captions' embeddings (the
 * encoder's last hidden state [L, D]) are computed once at the start, on the host, and fed to the step
 * (the teacher's text encoder is not in the training graph).
 *
 * The export is a StableDiffusionPipeline folder: the teacher's tokenizer, text encoder and VAE, the
 * student's U-Net, an LCMScheduler config, and diffuse.json (sampling lcm, 4 steps, guidance 1 — the
 * guidance is distilled in — and `distilledFrom`). Preview grids: a few training captions, each twice,
 * decoded through the VAE. With a `lora` section (LCM-LoRA, lcm-lora.ts) the U-Net is the teacher's
 * with the trained adapters fused in, and the adapters are written beside the folder as diffusers'
 * pytorch_lora_weights.safetensors (for the teacher's pipeline: `--lora`, load_lora_weights).
 */
import { join } from "node:path";
import { loadCaptionFolder } from "../data/caption-folder.ts";
import type { ImageDataset } from "../data/dataset.ts";
import { loadEmoji } from "../data/emoji.ts";
import { DataLoader } from "../data/loader.ts";
import type { Conditioning } from "../diffusion/conditioning.ts";
import { modelFromParams } from "../models/load.ts";
import { vaeScaleFactor } from "../models/vae/config.ts";
import { generate } from "../pipelines/generate.ts";
import { parametersText, type SamplingOptions } from "../pipelines/options.ts";
import { type LoadedPipeline, saveTextToImagePipeline } from "../pipelines/pipeline-dir.ts";
import {
  encodePrompts,
  latentDecoder,
  promptConditions,
  type TextEncoding,
} from "../pipelines/text-to-image.ts";
import { Scheduler } from "../samplers/scheduler.ts";
import { HostTensor } from "../tensor/host.ts";
import { Rng } from "../tensor/rng.ts";
import { checkpointView, type DistillConfig } from "./distill-config.ts";
import { type DistillMethodRun, lcmProvenance, studentProvenance } from "./distill-student.ts";
import { type LatentMoments, latentMoments } from "./latent-moments.ts";
import { drawLcmBatchWith, type LcmPlan, lcmBatchSpecs } from "./lcm.ts";
import { lcmStudent } from "./lcm-student.ts";
import type { TrainTask } from "./task.ts";

/** Captions of the preview grid (spread over the training set), each drawn with two seeds. */
const PREVIEW_PROMPTS = 8;

/** Captions encoded per text-encoder run when the embeddings are computed. */
const ENCODE_CHUNK = 128;

/** Embeddings of every caption [N, L, D] and of the empty prompt [1, L, D]. */
export interface CaptionEmbeddings {
  readonly embeds: Float32Array;
  readonly empty: Float32Array;
  /** [L, D] */
  readonly tokenShape: readonly [number, number];
}

/** The frozen encoder's embeddings of the captions (each distinct caption encoded once) and of "". */
export async function captionEmbeddings(
  text: TextEncoding,
  captions: readonly string[],
): Promise<CaptionEmbeddings> {
  const distinct = [...new Set(captions)];
  const row = new Map(distinct.map((c, i) => [c, i]));
  const empty = await encodePrompts(text, [""], "caption");
  if (empty.kind !== "text" || empty.pooled)
    throw new Error("LCM distils Stable Diffusion text encoders (the last hidden state alone)");
  const [, l, d] = empty.embeds.shape as [number, number, number];
  const per = l * d;
  const table = new Float32Array(distinct.length * per);
  for (let lo = 0; lo < distinct.length; lo += ENCODE_CHUNK) {
    const e = await encodePrompts(text, distinct.slice(lo, lo + ENCODE_CHUNK), "caption");
    if (e.kind !== "text") throw new Error("unreachable");
    table.set(e.embeds.data as Float32Array, lo * per);
  }
  const embeds = new Float32Array(captions.length * per);
  for (const [i, c] of captions.entries()) {
    const r = row.get(c)!;
    embeds.set(table.subarray(r * per, (r + 1) * per), i * per);
  }
  return { embeds, empty: empty.embeds.data as Float32Array, tokenShape: [l, d] };
}

/** The conditions of a batch of images: their captions' embeddings (c) and the empty prompt's (∅). */
export function captionConditions(
  e: CaptionEmbeddings,
  indices: ArrayLike<number>,
): { cond: Conditioning; uncond: Conditioning } {
  const n = indices.length;
  const [l, d] = e.tokenShape;
  const per = l * d;
  const c = new Float32Array(n * per);
  const u = new Float32Array(n * per);
  for (let i = 0; i < n; i++) {
    const k = indices[i]!;
    c.set(e.embeds.subarray(k * per, (k + 1) * per), i * per);
    u.set(e.empty, i * per);
  }
  return {
    cond: { kind: "text", embeds: new HostTensor(c, [n, l, d]) },
    uncond: { kind: "text", embeds: new HostTensor(u, [n, l, d]) },
  };
}

/** x₀ of a batch: z ~ N(mean, std²) from the cached posterior moments, scaled (z − shift)·scale. */
export function latentBatch(
  m: LatentMoments,
  indices: ArrayLike<number>,
  vae: { shift: number; scale: number },
  rng: Rng,
): HostTensor<"float32"> {
  const n = indices.length;
  const per = m.mean.length / m.shape[0]!;
  const eps = rng.normal(n * per);
  const x0 = new Float32Array(n * per);
  for (let i = 0; i < n; i++) {
    const off = indices[i]! * per;
    for (let j = 0; j < per; j++)
      x0[i * per + j] = (m.mean[off + j]! + m.std[off + j]! * eps[i * per + j]! - vae.shift) * vae.scale;
  }
  return new HostTensor(x0, [n, ...m.shape.slice(1)]);
}

/** The captioned images of a run: emoji's training split or a caption folder. */
function loadCaptioned(
  c: DistillConfig,
  size: number,
): ImageDataset & { readonly captions: readonly string[] } {
  if (c.data.dataset === "emoji") return loadEmoji({ split: "train", size });
  if (c.data.dataset === "folder") return loadCaptionFolder(c.data.path!, { size });
  throw new Error(
    `a text-to-image teacher distils on captioned images: data.dataset must be "emoji" or "folder" (a caption folder: metadata.jsonl or a .txt beside each image), got "${c.data.dataset}"`,
  );
}

/** The LCM method for a StableDiffusionPipeline teacher (the plan from distill-trainer.ts teacherPlan). */
export async function lcmTextMethod(
  c: DistillConfig,
  teacher: LoadedPipeline,
  plan: LcmPlan,
  schedulerConfig: Record<string, unknown>,
  runDir: string,
): Promise<DistillMethodRun> {
  const { text, vae } = teacher;
  if (teacher.pipelineClass !== "StableDiffusionPipeline" || !text || !vae || text.sd3)
    throw new Error(
      `${teacher.dir} is a ${teacher.pipelineClass}; LCM distils text-to-image teachers of the StableDiffusionPipeline kind (a UNet2DConditionModel, a CLIP text encoder, a VAE)`,
    );
  const bound = plan.model;
  const geo = bound.geometry;
  const factor = vaeScaleFactor(vae.config);
  const size = c.data.size ?? (geo.sampleSize ?? 8) * factor;
  const latentSize = size / factor;
  if (!Number.isInteger(latentSize) || latentSize % geo.multipleOf !== 0)
    throw new Error(
      `data.size ${size} does not fit the teacher: it must be a multiple of ${factor * geo.multipleOf} (the VAE's factor ${factor} × the U-Net's ${geo.multipleOf})`,
    );
  const data = loadCaptioned(c, size);
  if (data.count < 1) throw new Error(`data: no captioned images in ${c.data.path ?? c.data.dataset}`);
  const moments = await latentMoments(vae, data, join(runDir, "latents.safetensors"));
  const emb = await captionEmbeddings(text, data.captions);
  const view = checkpointView(c, bound.config, teacher.schedulerConfig, size, data.channels);
  const t = c.training;
  const seed = new Rng(t.seed);
  const loader = new DataLoader(data, { batchSize: t.batch_size, rng: seed.fold("data") });
  const scaling = { shift: vae.shiftFactor ?? 0, scale: vae.scalingFactor };
  const stride = Math.max(1, Math.floor(data.count / PREVIEW_PROMPTS));
  const prompts = [
    ...new Set(
      Array.from({ length: Math.min(PREVIEW_PROMPTS, data.count) }, (_, i) => data.captions[i * stride]!),
    ),
  ];
  const range = (teacher.info["imageRange"] as [number, number] | undefined) ?? [-1, 1];
  const fromTeacher = Object.fromEntries(
    ["promptTemplate", "promptExamples"].flatMap((k) => (k in teacher.info ? [[k, teacher.info[k]]] : [])),
  );
  const student = lcmStudent(c, plan, teacher, view, runDir);
  const task: TrainTask = {
    ...student.train,
    batchSpecs: lcmBatchSpecs(plan, t.batch_size, latentSize, { textLength: emb.tokenShape[0] }),
    batchSize: t.batch_size,
    description: `${c.data.dataset}: ${data.count} captioned images → ${moments.shape.slice(1).join("×")} latents; ${student.description}`,
    batch(k) {
      const b = loader.batchAt(Math.floor(k / loader.batchesPerEpoch), k % loader.batchesPerEpoch);
      const rng = seed.fold("step").fold(k);
      const x0 = latentBatch(moments, b.indices, scaling, rng.fold("latent"));
      return drawLcmBatchWith(plan, x0, captionConditions(emb, b.indices), rng);
    },
    async preview(params, step) {
      const m = modelFromParams(
        bound.config,
        student.weights(params),
        t.threads ? { session: { threads: t.threads } } : {},
      );
      const opts: SamplingOptions = {
        scheduler: "lcm",
        karras: false,
        steps: c.output.sample_steps,
        guidance: 1,
        guidanceRescale: 0,
        eta: 0,
        seed: t.seed,
      };
      try {
        const images = await generate(m, Scheduler.fromConfig(schedulerConfig), {
          conditions: await promptConditions(text, [...prompts, ...prompts]),
          steps: opts.steps,
          guidance: 1,
          seed: opts.seed,
          size: latentSize,
          decode: latentDecoder(vae),
        });
        const extra = { prompts: prompts.join(" | "), size };
        return { images, nrow: prompts.length, parameters: parametersText(opts, { step, extra }) };
      } finally {
        m.dispose();
      }
    },
    async exportPipeline(params, step, dir) {
      const unet = modelFromParams(bound.config, student.weights(params));
      try {
        await saveTextToImagePipeline(dir, {
          unet,
          textEncoder: text.textEncoder,
          tokenizer: text.tokenizer,
          vae,
          schedulerConfig,
          info: {
            numClasses: null,
            dataset: typeof teacher.info.dataset === "string" ? teacher.info.dataset : c.data.dataset,
            imageRange: range,
            ...fromTeacher,
            ...studentProvenance(c, teacher.dir, step, lcmProvenance(c, student.how)),
          },
        });
      } finally {
        unet.dispose();
      }
      student.exportBeside?.(params);
    },
  };
  return { view, task, stateFeeds: student.stateFeeds, emaDecay: student.emaDecay };
}
