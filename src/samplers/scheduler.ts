/**
 * The diffusers-compatible face of the samplers: `Scheduler.fromConfig(json)` reads a diffusers
 * `scheduler_config.json` object and maps it onto this folder's samplers and ladders.
 *
 *   const s = Scheduler.fromConfig(json);
 *   s.timesteps(numSteps);                              // what diffusers' set_timesteps picks
 *   const x = await s.sample(model, xT, { steps, eta, noise, onStep });
 *
 * `model(x, t)` returns the raw network output (ε, v or flow velocity per `prediction_type`) for the input
 * diffusers would pass (already scaled as its `scale_model_input` would) and diffusers' timestep value.
 * `sample` scales xT by `init_noise_sigma` as the pipelines do, draws noise through `noise(shape)` in
 * diffusers' order (default: a seeded Philox stream), and calls `onStep` after every step. A scheduler
 * holds no state between calls: one instance can serve concurrent runs.
 */

import { asF32, type F32, f32, map } from "../diffusion/float32.ts";
import { type Denoiser, denoiser, type Network, type Prediction } from "../diffusion/parameterization.ts";
import { clipX0, thresholdX0 } from "../diffusion/thresholding.ts";
import { HostTensor } from "../tensor/host.ts";
import { ddim } from "./ddim.ts";
import { ddpm } from "./ddpm.ts";
import {
  type PredictionType,
  parseSchedulerConfig,
  SCHEDULER_CLASSES,
  type SchedulerClass,
  type SchedulerConfig,
} from "./diffusers-config.ts";
import { alphasCumprodOf, type Plan, planFor } from "./diffusers-plans.ts";
import { dpmSolver } from "./dpm-solver.ts";
import { euler } from "./euler.ts";
import { eulerAncestral } from "./euler-ancestral.ts";
import { flowMatchEuler } from "./flow-match-euler.ts";
import { heun } from "./heun.ts";
import { lcm } from "./lcm.ts";
import { gaussianNoise, type NoiseFn, type OnStep } from "./types.ts";

export interface SampleOptions {
  /** Number of inference steps (diffusers' num_inference_steps). */
  steps: number;
  /** DDIM's η (default 0); other schedulers ignore it. */
  eta?: number;
  /** Fresh Gaussian noise per call, in the order diffusers draws it (default: seeded Philox). */
  noise?: NoiseFn;
  /** Seed of the default noise (default 0). */
  seed?: number;
  onStep?: OnStep;
}

export interface FromConfigOptions {
  /** Load the config as this class instead of its `_class_name` (diffusers' `Class.from_config(other)`). */
  className?: SchedulerClass;
}

/** diffusers' prediction_type → the denoiser's parameterization. */
export const PREDICTIONS: Record<PredictionType, Prediction> = {
  epsilon: "epsilon",
  sample: "x0",
  v_prediction: "v",
  flow_prediction: "flow",
};

function isSchedulerClass(name: unknown): name is SchedulerClass {
  return typeof name === "string" && (SCHEDULER_CLASSES as readonly string[]).includes(name);
}

/** The first `channels` channels (dim 1) of a network output (null: as many as the input has). */
function firstChannels(net: Network, channels: number | null): Network {
  return async (x, t) => {
    const out = asF32(await net(x, t), "network output");
    const [n = 1, c = 0, ...rest] = out.shape;
    channels ??= x.shape[1] ?? c;
    if (c <= channels) return out;
    const inner = rest.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n * channels * inner);
    for (let i = 0; i < n; i++) {
      data.set(out.data.subarray(i * c * inner, (i * c + channels) * inner), i * channels * inner);
    }
    return new HostTensor(data, [n, channels, ...rest]);
  };
}

export class Scheduler {
  readonly config: SchedulerConfig;
  /** ᾱ of the training schedule (null for flow matching). */
  readonly alphasCumprod: Float32Array | null;

  private constructor(config: SchedulerConfig) {
    this.config = config;
    if (config.className === "FlowMatchEulerDiscreteScheduler") this.alphasCumprod = null;
    else {
      const clamp = [
        "EulerDiscreteScheduler",
        "EulerAncestralDiscreteScheduler",
        "DPMSolverMultistepScheduler",
      ];
      this.alphasCumprod = alphasCumprodOf(config, clamp.includes(config.className));
    }
  }

  /** A scheduler from a diffusers scheduler config object (its `_class_name` picks the sampler). */
  static fromConfig(json: unknown, options: FromConfigOptions = {}): Scheduler {
    if (typeof json !== "object" || json === null || Array.isArray(json)) {
      throw new Error("Scheduler.fromConfig expects a scheduler_config.json object");
    }
    const record = json as Record<string, unknown>;
    const className = options.className ?? record["_class_name"];
    if (!isSchedulerClass(className)) {
      throw new Error(
        `unsupported scheduler _class_name ${JSON.stringify(className)}; supported: ${SCHEDULER_CLASSES.join(", ")} ` +
          "(pass { className } to load a config as one of them)",
      );
    }
    return new Scheduler(parseSchedulerConfig(record, className));
  }

  get className(): SchedulerClass {
    return this.config.className;
  }

  /** The full plan of an N-step run: timesteps, ladder and initial noise scale. */
  plan(numSteps: number): Plan {
    return planFor(this.config, numSteps, this.alphasCumprod);
  }

  /** The timesteps diffusers' set_timesteps(numSteps) picks (Heun: 2N − 1 entries, as diffusers lists them). */
  timesteps(numSteps: number): number[] {
    return this.plan(numSteps).timesteps;
  }

  /** The noise levels σ of the ladder (σ-based schedulers), the final one included. */
  sigmas(numSteps: number): number[] | null {
    const plan = this.plan(numSteps);
    return "ladder" in plan ? plan.ladder.map((l) => l.sigma) : null;
  }

  /** The standard deviation of the starting noise (diffusers' init_noise_sigma). */
  initNoiseSigma(numSteps: number): number {
    return this.plan(numSteps).initNoiseSigma;
  }

  /** The network as this config's Denoiser: prediction type, learned variance, clipping/thresholding. */
  denoiser(model: Network): Denoiser {
    const c = this.config;
    const prediction: Prediction =
      c.className === "FlowMatchEulerDiscreteScheduler" ? "flow" : PREDICTIONS[c.predictionType];
    let net = model;
    let learnedVariance = false;
    if (c.className === "DDPMScheduler")
      learnedVariance = c.varianceType === "learned" || c.varianceType === "learned_range";
    // diffusers keeps the first 3 channels of an ε network with learned variance.
    if (c.className === "DPMSolverMultistepScheduler" && c.varianceType && c.predictionType === "epsilon") {
      net = firstChannels(model, 3);
    } else if (!learnedVariance) {
      // every other sampler takes the prediction: the first channels of a learned-sigma network
      net = firstChannels(model, null);
    }
    let d = denoiser(net, prediction, { learnedVariance });
    if ("thresholding" in c && c.thresholding) {
      const updateEps = c.className === "DPMSolverMultistepScheduler" && !c.algorithmType.endsWith("++");
      d = thresholdX0(d, c.dynamicThresholdingRatio, c.sampleMaxValue, { updateEps });
    } else if ("clipSample" in c && c.clipSample) {
      d = clipX0(d, c.clipSampleRange);
    }
    return d;
  }

  /** Runs the sampling loop from the starting noise xT; returns the final sample. */
  async sample(
    model: Network,
    xT: HostTensor | { data: Float32Array; shape: readonly number[] },
    options: SampleOptions,
  ): Promise<F32> {
    const plan = this.plan(options.steps);
    const noise = options.noise ?? gaussianNoise(options.seed ?? 0);
    const onStep = options.onStep;
    const init = plan.initNoiseSigma;
    const x = init === 1 ? asF32(xT, "xT").clone() : map(asF32(xT, "xT"), (v) => f32(v * init));
    const d = this.denoiser(model);
    const c = this.config;
    switch (plan.sampler) {
      case "ddpm":
        return ddpm(d, x, plan.steps, {
          noise,
          onStep,
          variance: c.className === "DDPMScheduler" ? c.varianceType : "fixed_small",
        });
      case "ddim":
        return ddim(d, x, plan.steps, { eta: options.eta ?? 0, noise, onStep });
      case "lcm":
        return lcm(d, x, plan.steps, {
          noise,
          onStep,
          timestepScaling: c.className === "LCMScheduler" ? c.timestepScaling : 10,
        });
      case "euler":
        return euler(d, x, plan.ladder, { onStep });
      case "euler-ancestral":
        return eulerAncestral(d, x, plan.ladder, { noise, onStep });
      case "heun":
        return heun(d, x, plan.ladder, { onStep });
      case "flow-match-euler":
        return flowMatchEuler(d, x, plan.ladder, {
          noise,
          onStep,
          stochastic: c.className === "FlowMatchEulerDiscreteScheduler" && c.stochasticSampling,
        });
      case "dpm-solver": {
        if (c.className !== "DPMSolverMultistepScheduler") throw new Error("unreachable");
        return dpmSolver(d, x, plan.ladder, {
          algorithm: c.algorithmType,
          order: c.solverOrder,
          solverType: c.solverType,
          lowerOrderFinal: c.lowerOrderFinal,
          eulerAtFinal: c.eulerAtFinal,
          flow: c.sigmaSchedule === "flow",
          noise,
          onStep,
        });
      }
    }
  }
}
