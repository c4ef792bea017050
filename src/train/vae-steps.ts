/**
 * One optimizer step of an autoencoder run, as compiled ONNX Runtime sessions (train-step.ts):
 *
 *   before disc_start  the generator alone: reconstruction + KL           (one run)
 *   from disc_start    the generator with the adversarial term λ·G, then   (two runs)
 *                      the discriminator on the real batch and the generator's reconstructions
 *
 * Each network has its own optimizer state; λ (adaptive: measured by step k, used by step k + 1) and
 * the discriminator's state travel with the checkpoint. The generator's step with the adversarial
 * term is compiled when it is first needed.
 */
import { type AutoencoderKLConfig, vaeScaleFactor } from "../models/vae/config.ts";
import { vaeParamSpecs } from "../models/vae/vae.ts";
import type { SessionOptions } from "../runtime/options.ts";
import { HostTensor } from "../tensor/host.ts";
import { initParams, type ParamSpec, type Params } from "../tensor/params.ts";
import type { Rng } from "../tensor/rng.ts";
import { DEFAULTS, emaDecayAt, learningRate } from "./config.ts";
import { type PatchGanOptions, patchGanSpecs } from "./patch-gan.ts";
import {
  compileTrainStep,
  type StepResult,
  type TrainState,
  type TrainStep,
  type TrainStepOptions,
} from "./train-step.ts";
import type { VaeCheckpoint } from "./vae-checkpoint.ts";
import type { VaeTrainingConfig } from "./vae-config.ts";
import {
  adaptiveGanWeight,
  DISC_PREFIX,
  discBatchSpecs,
  discriminatorLoss,
  type VaeLossOptions,
  vaeBatchSpecs,
  vaeGeneratorLoss,
} from "./vae-objective.ts";

export interface VaeStepResult {
  readonly gen: StepResult;
  /** The discriminator's step (null before disc_start). */
  readonly disc: StepResult | null;
  readonly lr: number;
}

/** A step's scalar metric. */
export const metric = (r: StepResult, name: string): number => (r.metrics[name]!.data as Float32Array)[0]!;

export class VaeSteps {
  /** λ of the adversarial term for the next generator step. */
  ganWeight: number;
  /** The discriminator's state (null until it starts). */
  disc: TrainState | null = null;
  private ganStep: TrainStep | null = null;
  /** The trained weights' specs (all of the autoencoder's, or its decoder side's). */
  readonly vaeSpecs: ParamSpec[];

  private constructor(
    private readonly c: AutoencoderKLConfig,
    private readonly t: VaeTrainingConfig,
    private readonly size: number,
    private readonly stepOpts: TrainStepOptions,
    private readonly genStep: TrainStep,
    private readonly gan: PatchGanOptions | null,
    private readonly discStep: TrainStep | null,
    readonly discSpecs: ParamSpec[] | null,
    /** The frozen weights (the encoder side when only the decoder trains), or null. */
    readonly frozen: Params | null,
  ) {
    this.vaeSpecs = vaeParamSpecs(c).filter((s) => !frozen?.has(s.name));
    this.ganWeight = t.disc_weight_mode === "fixed" ? t.disc_weight : 0;
  }

  /**
   * Compiles the generator's step (and the discriminator's, when the run has one); `frozen` weights
   * are constants of the generator's step, neither differentiated nor updated.
   */
  static async compile(
    c: AutoencoderKLConfig,
    t: VaeTrainingConfig,
    size: number,
    session: SessionOptions,
    frozen: Params | null = null,
  ): Promise<VaeSteps> {
    const stepOpts: TrainStepOptions = {
      adamw: { beta1: t.adam_beta1, beta2: t.adam_beta2, eps: t.adam_eps, weightDecay: t.weight_decay },
      ...(t.grad_clip !== null ? { clipGradNorm: t.grad_clip } : {}),
      ema: t.ema_decay !== null,
      session,
    };
    const genOpts: TrainStepOptions = frozen ? { ...stepOpts, frozen } : stepOpts;
    const gen = await compileTrainStep(
      vaeGeneratorLoss(c, lossOptions(t, null)),
      vaeBatchSpecs(c, t.batch_size, size, false),
      genOpts,
    );
    const gan = t.disc_start !== null ? { layers: t.disc_layers, channels: t.disc_channels } : null;
    const discStep = gan
      ? await compileTrainStep(discriminatorLoss(gan), discBatchSpecs(c.outChannels, t.batch_size, size), {
          ...stepOpts,
          ema: false,
        })
      : null;
    const discSpecs = gan ? patchGanSpecs(c.outChannels, size, gan) : null;
    return new VaeSteps(c, t, size, genOpts, gen, gan, discStep, discSpecs, frozen);
  }

  /**
   * The first state: the trained weights from `init` (training.init_from), else fresh ones (the
   * discriminator's come when it starts, each from its own stream).
   */
  initState(rng: Rng, init: Params | null = null): TrainState {
    const params = init
      ? new Map(this.vaeSpecs.map((s) => [s.name, init.get(s.name)!.clone()]))
      : initParams(this.vaeSpecs, rng.fold("init"));
    return this.genStep.initState(params);
  }

  /** Every weight of the autoencoder: the frozen ones and the trained ones of `params`. */
  allWeights(params: Params): Params {
    return this.frozen ? new Map([...this.frozen, ...params]) : params;
  }

  /** Takes up a checkpoint's discriminator and λ (the autoencoder's state is `ck.vae`). */
  restore(ck: VaeCheckpoint): void {
    this.disc = ck.disc;
    this.ganWeight = ck.ganWeight;
  }

  /**
   * What a checkpoint saves (after `sync`): the autoencoder's state with every weight (a frozen
   * encoder's too, so checkpoint/vae is a whole AutoencoderKL; moments only for the trained ones),
   * the discriminator and λ.
   */
  snapshot(state: TrainState): VaeCheckpoint {
    const vae = {
      ...state,
      params: this.allWeights(state.params),
      ema: state.ema && this.allWeights(state.ema),
    };
    return { vae, disc: this.disc, ganWeight: this.ganWeight };
  }

  /** Brings every state's tensors back to the host (after steps on a GPU; a no-op on the CPU). */
  async sync(state: TrainState): Promise<void> {
    await this.genStep.sync(state);
    if (this.ganStep) await this.ganStep.sync(state);
    if (this.disc && this.discStep) await this.discStep.sync(this.disc);
  }

  /** The posterior noise ε of step k, [B, latent, size/f, size/f], from the step's stream. */
  noise(rng: Rng): HostTensor<"float32"> {
    const side = this.size / vaeScaleFactor(this.c);
    const shape = [this.t.batch_size, this.c.latentChannels, side, side];
    return new HostTensor(rng.normal(shape.reduce((a, b) => a * b, 1)), shape);
  }

  private lrAt(base: number, k: number): number {
    const { lr_schedule, warmup_steps, steps } = this.t;
    return learningRate({ ...DEFAULTS.training, lr: base, lr_schedule, warmup_steps, steps }, k);
  }

  /** Step k on images x in [−1, 1]: the generator's update, then (from disc_start) the discriminator's. */
  async step(state: TrainState, x: HostTensor<"float32">, rng: Rng, k: number): Promise<VaeStepResult> {
    const t = this.t;
    const lr = this.lrAt(t.lr, k);
    const ema = t.ema_decay !== null ? emaDecayAt(t.ema_decay, k) : 0;
    const noise = this.noise(rng);
    if (!this.gan || !this.discStep || t.disc_start === null || k < t.disc_start) {
      return { gen: await this.genStep.step(state, { x, noise }, lr, ema), disc: null, lr };
    }
    this.ganStep ??= await compileTrainStep(
      vaeGeneratorLoss(this.c, lossOptions(t, this.gan)),
      vaeBatchSpecs(this.c, t.batch_size, this.size, true),
      this.stepOpts,
    );
    this.disc ??= this.discStep.initState(initParams(this.discSpecs!, rng.fold("disc-init")));
    await this.discStep.sync(this.disc);
    const feeds: Record<string, HostTensor> = { x, noise, gan_weight: HostTensor.scalar(this.ganWeight) };
    for (const [name, v] of this.disc.params) feeds[`${DISC_PREFIX}.${name}`] = v;
    const gen = await this.ganStep.step(state, feeds, lr, ema);
    if (t.disc_weight_mode === "adaptive") {
      this.ganWeight = adaptiveGanWeight(metric(gen, "rec_grad"), metric(gen, "g_grad"), t.disc_weight);
    }
    const fake = gen.metrics["recon"]!;
    const disc = await this.discStep.step(this.disc, { real: x, fake }, this.lrAt(t.disc_lr ?? t.lr, k));
    return { gen, disc, lr };
  }
}

function lossOptions(t: VaeTrainingConfig, gan: PatchGanOptions | null): VaeLossOptions {
  return { reconstruction: t.reconstruction, klWeight: t.kl_weight, gan };
}
