/**
 * The denoising objective (Ho et al. 2020; v-prediction: Salimans & Ho 2022; flow matching: Lipman
 * et al. 2023) as a training-step loss over any registered denoiser, and the host side that draws
 * each step's batch.
 *
 * In the graph:  x_t = a·x0 + s·ε  (a = √ᾱ_t, s = √(1−ᾱ_t); flow: a = 1−σ, s = σ, σ shifted as the scheduler's)
 *                target = cx0·x0 + cε·ε  (the coefficients of `targetCoefficients`, fed per sample)
 *                loss = mean_n w_n · mean((net(x_t, t, cond)[:C] − target)²)
 * On the host: t, ε, the target coefficients, the condition dropout and the weights w, from a per-step
 * RNG stream, so a run resumed at step k draws exactly what the uninterrupted run drew. A network
 * that also predicts its variance (2C output channels) is trained on its first C channels.
 */
import {
  type LossWeighting,
  lossWeights,
  sampleFlowTimes,
  sampleTimesteps,
  type TimestepSampling,
} from "../diffusion/losses.ts";
import { type Prediction, targetCoefficients } from "../diffusion/parameterization.ts";
import type { BoundDenoiser, CondSizes } from "../models/registry.ts";
import { weightedMse } from "../nn/losses.ts";
import type { InputSpec } from "../runtime/compile.ts";
import { Scheduler } from "../samplers/scheduler.ts";
import { HostTensor } from "../tensor/host.ts";
import * as o from "../tensor/ops.ts";
import type { ParamScope } from "../tensor/params.ts";
import type { Rng } from "../tensor/rng.ts";
import type { Tensor } from "../tensor/symbolic.ts";
import type { TrainConfig } from "./config.ts";
import type { LossFn } from "./train-step.ts";

export interface Objective {
  prediction: Prediction;
  /** ᾱ per training timestep (null for flow matching). */
  alphasCumprod: Float32Array | null;
  numTrainTimesteps: number;
  weighting: LossWeighting;
  /** How the noise level of each sample is drawn. */
  timesteps: TimestepSampling;
  /**
   * Flow matching: the drawn time u becomes σ = shift·u / (1 + (shift − 1)·u), the scheduler's `shift`
   * (SD3: 3.0), as diffusers' SD3 training draws from its shifted σ table. Default 1 (σ = u).
   */
  flowShift?: number;
  /** The label that stands for "no class" (condition dropout), or null for a model without labels. */
  nullLabel: number | null;
  condDropout: number;
}

/** Graph inputs of one training batch of `batch` images of size×size (text conditioning: `sizes.textLength` tokens, default 77). */
export function batchSpecs(
  model: BoundDenoiser,
  batch: number,
  size: number,
  sizes: CondSizes = {},
): Record<string, InputSpec> {
  const img = [batch, model.geometry.inChannels, size, size];
  const perSample = [batch, 1, 1, 1];
  const specs: Record<string, InputSpec> = {
    x0: { shape: img },
    noise: { shape: img },
    t: { shape: [batch] },
    a: { shape: perSample },
    s: { shape: perSample },
    tx: { shape: perSample },
    te: { shape: perSample },
    w: { shape: [batch] },
  };
  for (const [k, spec] of Object.entries(model.condInputs(batch, sizes))) specs[`cond.${k}`] = spec;
  return specs;
}

export interface DiffusionLossOptions {
  /** The denoiser's parameters under this prefix (a run that trains more than the denoiser). */
  denoiserScope?: string;
  /**
   * Computes the denoiser's conditioning inputs inside the graph (e.g. token ids → a text encoder's
   * hidden states, trained jointly); default: the batch's `cond.*` inputs as they are.
   */
  condition?: (scope: ParamScope, batch: Readonly<Record<string, Tensor>>) => Record<string, Tensor>;
}

/** The `cond.*` inputs of a batch, by the denoiser's input name. */
function batchConditions(b: Readonly<Record<string, Tensor>>): Record<string, Tensor> {
  const cond: Record<string, Tensor> = {};
  for (const [k, v] of Object.entries(b)) if (k.startsWith("cond.")) cond[k.slice(5)] = v;
  return cond;
}

/** The loss over a denoiser: the weighted MSE of its prediction against the target. */
export function diffusionLoss(model: BoundDenoiser, opts: DiffusionLossOptions = {}): LossFn {
  const c = model.geometry.inChannels;
  return (scope, b) => {
    const x0 = b["x0"]!;
    const eps = b["noise"]!;
    const xt = o.add(o.mul(b["a"]!, x0), o.mul(b["s"]!, eps)); // [B, C, H, W]
    const cond = opts.condition ? opts.condition(scope, b) : batchConditions(b);
    const net = opts.denoiserScope ? scope.sub(opts.denoiserScope) : scope;
    const out = model.forward(net, xt, b["t"]!, cond); // [B, C_out, H, W]
    const pred = out.shape[1] === c ? out : o.slice(out, 1, 0, c); // [B, C, H, W]
    const target = o.add(o.mul(b["tx"]!, x0), o.mul(b["te"]!, eps)); // [B, C, H, W]
    return weightedMse(pred, target, b["w"]!);
  };
}

/**
 * What a batch may take as given instead of drawing it: the noise paired with each x0 (reflow trains
 * on the (x0, ε) pairs of a teacher's ODE, train/reflow.ts), and the flow times u ∈ [0, 1] (before the
 * shift; u = 1 for every sample trains the one-step jump from pure noise).
 */
export interface DrawnParts {
  noise?: HostTensor<"float32">;
  flowTimes?: readonly number[];
}

/** The random part of one training batch, drawn from `rng` (use a per-step stream). */
export function drawBatch(
  obj: Objective,
  x0: HostTensor<"float32">,
  labels: HostTensor<"int64"> | null,
  rng: Rng,
  given: DrawnParts = {},
): Record<string, HostTensor> {
  const n = x0.shape[0]!;
  if (given.noise && given.noise.shape.join() !== x0.shape.join())
    throw new Error(`the given noise is [${given.noise.shape}], the batch [${x0.shape}]: they must match`);
  if (given.flowTimes && (obj.alphasCumprod || given.flowTimes.length !== n))
    throw new Error(`given flow times need a flow-matching objective and one time per sample (${n})`);
  const noise = given.noise ?? new HostTensor(rng.normal(x0.size), x0.shape);
  const a = new Float32Array(n);
  const s = new Float32Array(n);
  const t = new Float32Array(n);
  const snrs: number[] = [];
  if (obj.alphasCumprod) {
    const ts = sampleTimesteps(rng, n, obj.numTrainTimesteps, obj.timesteps);
    ts.forEach((ti, i) => {
      const ab = obj.alphasCumprod![ti]!;
      a[i] = Math.sqrt(ab);
      s[i] = Math.sqrt(1 - ab);
      t[i] = ti;
      snrs.push(ab / (1 - ab));
    });
  } else {
    const shift = obj.flowShift ?? 1;
    (given.flowTimes ?? sampleFlowTimes(rng, n, obj.timesteps)).forEach((u, i) => {
      const sig = shift === 1 ? u : (shift * u) / (1 + (shift - 1) * u);
      a[i] = 1 - sig;
      s[i] = sig;
      t[i] = sig * obj.numTrainTimesteps;
      snrs.push(((1 - sig) / sig) ** 2);
    });
  }
  const tx = new Float32Array(n);
  const te = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const k = targetCoefficients(obj.prediction, { alpha: a[i]!, sigma: s[i]!, t: t[i]! });
    tx[i] = k.x0;
    te[i] = k.eps;
  }
  const w = Float32Array.from(lossWeights(obj.weighting, obj.prediction, snrs), (v) =>
    Number.isFinite(v) ? v : 0,
  );
  const per = [n, 1, 1, 1];
  const feeds: Record<string, HostTensor> = {
    x0,
    noise,
    t: new HostTensor(t, [n]),
    a: new HostTensor(a, per),
    s: new HostTensor(s, per),
    tx: new HostTensor(tx, per),
    te: new HostTensor(te, per),
    w: new HostTensor(w, [n]),
  };
  if (obj.nullLabel !== null) {
    const nullLabel = BigInt(obj.nullLabel);
    const y = new BigInt64Array(n);
    for (let i = 0; i < n; i++) {
      const dropped = rng.nextUniform() < obj.condDropout;
      y[i] = dropped || !labels ? nullLabel : labels.data[i]!;
    }
    feeds["cond.class_labels"] = new HostTensor(y, [n]);
  }
  return feeds;
}

const PRED: Record<string, Prediction> = {
  epsilon: "epsilon",
  v_prediction: "v",
  sample: "x0",
  flow_prediction: "flow",
};

/** The objective a run's config asks for (its scheduler's schedule and prediction type, its training fields). */
export function objectiveOf(cfg: TrainConfig, model: BoundDenoiser): Objective {
  const scheduler = Scheduler.fromConfig(cfg.scheduler);
  const flow = scheduler.alphasCumprod === null;
  const pt = String(cfg.scheduler["prediction_type"] ?? (flow ? "flow_prediction" : "epsilon"));
  const prediction = flow ? "flow" : PRED[pt];
  if (!prediction)
    throw new Error(`scheduler.prediction_type "${pt}" is not one of epsilon, v_prediction, sample`);
  const t = cfg.training;
  const spec = model.conditioning;
  if (spec.kind === "class" && spec.nullLabel === null) {
    throw new Error(
      `${model.className} takes class labels that are not a class table (class_embed_type); diffuse trains class tables only`,
    );
  }
  const weighting =
    t.loss_weighting === "min-snr"
      ? { kind: "min-snr" as const, gamma: t.snr_gamma }
      : t.loss_weighting === "edm"
        ? { kind: "edm" as const }
        : { kind: "uniform" as const };
  const obj: Objective = {
    prediction,
    alphasCumprod: scheduler.alphasCumprod,
    numTrainTimesteps: Number(cfg.scheduler["num_train_timesteps"] ?? 1000),
    weighting,
    timesteps:
      t.timestep_sampling === "logit-normal"
        ? { kind: "logit-normal", mean: t.logit_mean, std: t.logit_std }
        : { kind: "uniform" },
    nullLabel: spec.kind === "class" ? spec.nullLabel : null,
    condDropout: t.cond_dropout,
  };
  if (flow) {
    const shift = Number(cfg.scheduler["shift"] ?? 1);
    if (!(shift > 0))
      throw new Error(`scheduler.shift must be a number > 0 (SD3: 3.0), got ${cfg.scheduler["shift"]}`);
    obj.flowShift = shift;
  }
  return obj;
}
