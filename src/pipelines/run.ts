/**
 * One call that generates with any loaded pipeline: class labels (or a count) for label and
 * unconditional models, prompts (and negative prompts) for text-to-image ones — encoded by the
 * pipeline's text encoder, sampled in the VAE's latent space and decoded — steered, with a control
 * image, by the pipeline's ControlNet (U-Net and ControlNet in one graph per step; classifier-free
 * guidance batched as ever). The CLI, the studio and the evaluation all generate through it.
 */
import { resizeCrop } from "../data/resize.ts";
import type { Conditioning } from "../diffusion/conditioning.ts";
import { type Raster, toChannels } from "../io/raster.ts";
import { controlledDenoiser } from "../models/controlnet/controlled.ts";
import { UNet2DConditionModel } from "../models/unet-cond/model.ts";
import { vaeScaleFactor } from "../models/vae/config.ts";
import type { Scheduler } from "../samplers/scheduler.ts";
import { formatShape, HostTensor } from "../tensor/host.ts";
import { type ConditionalDenoiser, type GenerateOptions, generate } from "./generate.ts";
import type { LoadedPipeline } from "./pipeline-dir.ts";
import { checkPrompts, latentDecoder, PromptError, promptConditions } from "./text-to-image.ts";

export interface PipelineRequest extends Omit<GenerateOptions, "conditions" | "decode" | "size"> {
  /** One prompt per image (text-to-image pipelines). */
  prompts?: readonly string[];
  /** One negative prompt per image, or one for all (default: the empty prompt). */
  negativePrompts?: readonly string[] | null;
  /** The image side (default: the model's). */
  size?: number;
  /** A control image for the pipeline's ControlNet (StableDiffusionControlNetPipeline folders). */
  control?: ControlRequest;
}

/** A control image and how strongly it steers (diffusers' image, controlnet_conditioning_scale, guess_mode). */
export interface ControlRequest {
  /** [1 or N, C, H, W] in [0, 1] at the image size (one for every image, or one each): e.g. Canny edges. */
  readonly image: HostTensor<"float32">;
  /** conditioning_scale (default 1; 0: the U-Net alone). */
  readonly scale?: number;
  /**
   * diffusers' guess_mode: the residuals scaled from 0.1 (shallowest skip) to 1 (mid block), and under
   * classifier-free guidance given to the conditional half only (the structure without the prompt).
   */
  readonly guessMode?: boolean;
}

/** Thrown for a control request the pipeline cannot take (no ControlNet, a bad image). */
export class ControlError extends Error {
  override name = "ControlError";
}

/**
 * A decoded image as a control image [1, 3, size, size] in [0, 1]: transparent pixels over black (an
 * edge map draws white lines on black), centre-cropped to a square and area-resized.
 */
export function controlFromRaster(raster: Raster, size: number): HostTensor<"float32"> {
  const rgb = toChannels(raster, 3, "black");
  return new HostTensor(resizeCrop(rgb, size, size, "area"), [1, 3, size, size]);
}

/** Whether a pipeline takes a control image. */
export const takesControl = (pipe: LoadedPipeline): boolean => pipe.controlnet !== undefined;

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
  const f = pipe.vae ? vaeScaleFactor(pipe.vae.config) : 1;
  if (size % f !== 0) throw new Error(`image size ${size} is not a multiple of the VAE's factor ${f}`);
  const m = pipe.denoiser.bound.geometry.multipleOf;
  if ((size / f) % m !== 0)
    throw new Error(
      `image size ${size} gives ${size / f}×${size / f} latents, not a multiple of ${m} as ${pipe.denoiser.bound.className} needs: use a multiple of ${f * m}`,
    );
  const control = req.control ? checkControl(pipe, req.control, prompts.length, size) : null;
  const conditions = await promptConditions(pipe.text, prompts, negatives);
  let model: ConditionalDenoiser = pipe.denoiser;
  if (control) {
    const { image, scale, guessMode } = control;
    // guess mode: the unconditional half runs without the ControlNet's residuals (scale 0), as diffusers
    conditions.cond = withControl(conditions.cond, { image, scale, ...(guessMode ? { guessMode } : {}) });
    conditions.uncond = withControl(conditions.uncond, {
      image,
      scale: guessMode ? 0 : scale,
      ...(guessMode ? { guessMode } : {}),
    });
    model = controlledDenoiser(pipe.denoiser as UNet2DConditionModel, pipe.controlnet!);
  }
  return generate(model, scheduler, {
    ...req,
    labels: undefined,
    conditions,
    size: size / f,
    ...(pipe.vae ? { decode: latentDecoder(pipe.vae) } : {}),
  });
}

/** A conditioning with a control image. */
function withControl(c: Conditioning, control: NonNullable<Conditioning["control"]>): Conditioning {
  return { ...c, control };
}

/**
 * The control image for n images of side `size`, checked: the pipeline has a ControlNet; the image is
 * float32 [1 or n, C, size, size] (one is repeated for every image) with the ControlNet's channels.
 */
function checkControl(
  pipe: LoadedPipeline,
  req: ControlRequest,
  n: number,
  size: number,
): { image: HostTensor<"float32">; scale: number; guessMode: boolean } {
  if (!pipe.controlnet || !(pipe.denoiser instanceof UNet2DConditionModel))
    throw new ControlError(
      `${pipe.dir} is a ${pipe.pipelineClass} without a ControlNet: a control image needs a StableDiffusionControlNetPipeline folder (one with controlnet/)`,
    );
  const scale = req.scale ?? 1;
  if (!Number.isFinite(scale)) throw new ControlError(`the control scale must be a number, got ${scale}`);
  const channels = pipe.controlnet.config.conditioningChannels;
  const img = req.image;
  const s = img.shape;
  if (img.dtype !== "float32" || s.length !== 4 || s[1] !== channels || s[2] !== size || s[3] !== size) {
    throw new ControlError(
      `the control image must be float32 [1 or ${n}, ${channels}, ${size}, ${size}] in [0, 1] (this model's image size), got ${img.dtype} ${formatShape(s)}`,
    );
  }
  if (s[0] !== 1 && s[0] !== n)
    throw new ControlError(`got ${s[0]} control images for ${n} images: give one, or one per image`);
  let image = img;
  if (s[0] === 1 && n > 1) {
    const data = new Float32Array(n * img.size);
    for (let i = 0; i < n; i++) data.set(img.data, i * img.size);
    image = new HostTensor(data, [n, ...s.slice(1)]);
  }
  return { image, scale, guessMode: req.guessMode ?? false };
}
