/**
 * The teacher of the distillation tests: a tiny class-conditional v-prediction U-Net (UNet2DModel, 8
 * and 16 channels, 11 class embeddings: 10 digits and "no class") trained briefly on MNIST 28×28, so
 * that its guided ODE ends somewhere sensible. Seconds to train. And how far a student's one-step
 * samples are from the teacher's guided ODE solutions.
 */
import { join } from "node:path";
import { generate } from "../../src/pipelines/generate.ts";
import type { LoadedPipeline } from "../../src/pipelines/pipeline-dir.ts";
import { schedulerFor } from "../../src/pipelines/scheduler-names.ts";
import type { WorkerContext } from "../../src/runtime/worker.ts";
import { Scheduler } from "../../src/samplers/scheduler.ts";
import { type TrainEvent, trainRun } from "../../src/train/trainer.ts";
import { TINY_UNET_ATTN } from "./tiny-models.ts";

/** A training loop context that collects the events (and is never aborted). */
export function eventSink(events: TrainEvent[] = []): WorkerContext<TrainEvent> {
  return { post: (e) => events.push(e), signal: new AbortController().signal };
}

/** Trains the teacher into `runDir`; returns its pipeline folder (runDir/model). */
export async function trainTinyMnistTeacher(runDir: string): Promise<string> {
  await trainRun(
    {
      config: {
        // the tiny attention U-Net at MNIST's size, 10 digits + "no class"
        model: { ...TINY_UNET_ATTN, sample_size: 28, attention_head_dim: 8, num_class_embeds: 11 },
        scheduler: {
          _class_name: "DDPMScheduler",
          num_train_timesteps: 1000,
          beta_schedule: "linear",
          // (explicit: a scheduler of another class made from this config, e.g. `--scheduler lcm`,
          // would otherwise take its own class's default betas)
          beta_start: 0.0001,
          beta_end: 0.02,
          prediction_type: "v_prediction",
          clip_sample: false,
        },
        data: { dataset: "mnist", size: 28 },
        training: { steps: 80, batch_size: 16, lr: 3e-3, warmup_steps: 10, seed: 1, threads: 2 },
        output: { checkpoint_every: 1000, sample_every: 0, log_every: 50, sample_steps: 2 },
      },
      outDir: runDir,
    },
    eventSink(),
  );
  return join(runDir, "model");
}

const LABELS = Array.from({ length: 32 }, (_, i) => i % 10);

/**
 * Mean squared distance between a student's one-step LCM samples and the teacher's guided (1.5)
 * 10-step DDIM ones from the same noise.
 */
export async function oneStepError(student: LoadedPipeline, teacher: LoadedPipeline): Promise<number> {
  const ddim = Scheduler.fromConfig({
    ...teacher.schedulerConfig,
    _class_name: "DDIMScheduler",
    timestep_spacing: "trailing",
  });
  const ode = await generate(teacher.denoiser, ddim, { labels: LABELS, steps: 10, guidance: 1.5, seed: 5 });
  const lcm = schedulerFor({ name: "lcm" }, student.schedulerConfig);
  const one = await generate(student.denoiser, lcm, { labels: LABELS, steps: 1, guidance: 1, seed: 5 });
  let s = 0;
  for (let i = 0; i < one.size; i++) s += (one.data[i]! - ode.data[i]!) ** 2;
  return s / one.size;
}
