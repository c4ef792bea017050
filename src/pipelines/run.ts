/**
 * One call that generates with any loaded pipeline: class labels (or a count) for label and
 * unconditional models, prompts (and negative prompts) for text-to-image ones — encoded by the
 * pipeline's text encoder, sampled in the VAE's latent space and decoded. The CLI, the studio and the
 * evaluation all generate through it.
 */
import { vaeScaleFactor } from "../models/vae/config.ts";
import type { Scheduler } from "../samplers/scheduler.ts";
import type { HostTensor } from "../tensor/host.ts";
import { type GenerateOptions, generate } from "./generate.ts";
import type { LoadedPipeline } from "./pipeline-dir.ts";
import { checkPrompts, latentDecoder, PromptError, promptConditions } from "./text-to-image.ts";

export interface PipelineRequest extends Omit<GenerateOptions, "conditions" | "decode" | "size"> {
  /** One prompt per image (text-to-image pipelines). */
  prompts?: readonly string[];
  /** One negative prompt per image, or one for all (default: the empty prompt). */
  negativePrompts?: readonly string[] | null;
  /** The image side (default: the model's). */
  size?: number;
}

/** Whether a pipeline generates from prompts. */
export const takesPrompts = (pipe: LoadedPipeline): boolean => pipe.text !== undefined;

/** The side of the images a pipeline makes by default. */
export function imageSize(pipe: LoadedPipeline): number {
  const s = pipe.denoiser.bound.geometry.sampleSize ?? 32;
  return pipe.vae ? s * vaeScaleFactor(pipe.vae.config) : s;
}

export async function pipelineGenerate(
  pipe: LoadedPipeline,
  scheduler: Scheduler,
  req: PipelineRequest,
): Promise<HostTensor<"float32">> {
  const size = req.size ?? imageSize(pipe);
  if (!pipe.text) {
    if (req.prompts)
      throw new PromptError(`${pipe.denoiser.bound.className} takes no prompts: give class labels`);
    return generate(pipe.denoiser, scheduler, { ...req, size });
  }
  if (!req.prompts) throw new PromptError("this is a text-to-image model: give a prompt per image");
  const prompts = checkPrompts(req.prompts);
  let negatives = req.negativePrompts ?? null;
  if (negatives && negatives.length === 1 && prompts.length > 1)
    negatives = prompts.map(() => negatives![0]!);
  const conditions = await promptConditions(pipe.text, prompts, negatives);
  const f = pipe.vae ? vaeScaleFactor(pipe.vae.config) : 1;
  if (size % f !== 0) throw new Error(`image size ${size} is not a multiple of the VAE's factor ${f}`);
  return generate(pipe.denoiser, scheduler, {
    ...req,
    labels: undefined,
    conditions,
    size: size / f,
    ...(pipe.vae ? { decode: latentDecoder(pipe.vae) } : {}),
  });
}
