/**
 * What the distillation loop (distill-trainer.ts) asks of a method — LCM (train/lcm.ts) or reflow
 * (train/reflow.ts): the run as the checkpoint code sees it, the task (loss, batch of step k, preview,
 * export), the feeds that read the train state, and the EMA decay of step k. Also the one preview
 * grid every student draws: all classes twice, without guidance, on the student's own scheduler;
 * and the provenance every exported student's diffuse.json carries.
 */

import { modelFromParams } from "../models/load.ts";
import type { BoundDenoiser } from "../models/registry.ts";
import { generate } from "../pipelines/generate.ts";
import { parametersText, type SamplingOptions } from "../pipelines/options.ts";
import { bundledName } from "../pipelines/pipeline-dir.ts";
import { Scheduler } from "../samplers/scheduler.ts";
import type { HostTensor } from "../tensor/host.ts";
import type { TrainConfig } from "./config.ts";
import type { DistillConfig } from "./distill-config.ts";
import type { TrainTask } from "./task.ts";
import type { TrainState } from "./train-step.ts";

/**
 * diffuse.json's record of how a student was made: the command, its steps, the teacher (a bundled
 * model by its name, else its folder) and the method's own settings (`how`), the sampling it is made
 * for, and the whole run config.
 */
export function studentProvenance(
  c: DistillConfig,
  teacherDir: string,
  step: number,
  made: {
    how: Readonly<Record<string, unknown>>;
    sampling: { scheduler: string; steps: number; guidance: number };
  },
): Record<string, unknown> {
  const { how, sampling } = made;
  return {
    trainedWith: `diffuse distill --method ${c.method}`,
    trainedSteps: step,
    distilledFrom: { teacher: bundledName(teacherDir), method: c.method, ...how },
    sampling,
    training: c,
  };
}

/**
 * An LCM student's own settings in its provenance (and, from lcm-student.ts, a LoRA student's: method
 * "lcm-lora", rank, alpha, targets), and what it samples with.
 */
export const lcmProvenance = (c: DistillConfig, student: Readonly<Record<string, unknown>> = {}) => ({
  how: { guidance: c.lcm.guidance, solverSteps: c.lcm.solver_steps, ...student },
  sampling: { scheduler: "lcm", steps: 4, guidance: 1 },
});

export interface DistillMethodRun {
  /** The run as `diffuse train`'s checkpoint code sees one (its hash guards resumes). */
  readonly view: TrainConfig;
  readonly task: TrainTask;
  /** Feeds of a step that read the train state (LCM's target network); none by default. */
  stateFeeds?(state: TrainState): Record<string, HostTensor>;
  /** The EMA decay of step k. */
  emaDecay(k: number): number;
}

/** How a student's preview grid is drawn. */
export interface StudentPreview {
  /** The scheduler's name in diffuse (`lcm`, `flow-euler`), for the grid's parameters text. */
  scheduler: string;
  schedulerConfig: Record<string, unknown>;
  steps: number;
  numClasses: number | null;
  size: number;
  seed: number;
  threads: number | null;
}

/** The preview of a student: 2·K class-ordered samples (16 for an unconditional one) at guidance 1. */
export function studentPreview(bound: BoundDenoiser, p: StudentPreview): TrainTask["preview"] {
  return async (params, step) => {
    const m = modelFromParams(
      bound.config,
      new Map(params),
      p.threads ? { session: { threads: p.threads } } : {},
    );
    const labels = p.numClasses ? Array.from({ length: 2 * p.numClasses }, (_, i) => i % p.numClasses!) : 16;
    const opts: SamplingOptions = {
      scheduler: p.scheduler,
      karras: false,
      steps: p.steps,
      guidance: 1,
      guidanceRescale: 0,
      eta: 0,
      seed: p.seed,
    };
    const images = await generate(m, Scheduler.fromConfig(p.schedulerConfig), {
      labels,
      numClasses: p.numClasses,
      steps: opts.steps,
      guidance: 1,
      seed: opts.seed,
      size: p.size,
    }).finally(() => m.dispose());
    return {
      images,
      nrow: p.numClasses ?? 8,
      parameters: parametersText(opts, {
        step,
        labels: p.numClasses ? "all" : null,
        extra: { count: Array.isArray(labels) ? labels.length : labels, size: p.size },
      }),
    };
  };
}
