/**
 * The denoising objective (Ho et al. 2020; v-prediction: Salimans & Ho 2022; flow matching: Lipman
 * et al. 2023) as a training-step loss over a U-Net, and the host side that draws each step's batch.
 *
 * In the graph:  x_t = a·x0 + s·ε  (a = √ᾱ_t, s = √(1−ᾱ_t); flow: a = 1−σ, s = σ)
 *                loss = mean_n w_n · mean((net(x_t, t, y) − target)²)
 * On the host: t, ε, the condition dropout and the weights w, from a per-step RNG stream, so a run
 * resumed at step k draws exactly what the uninterrupted run drew.
 */
import {
  type LossWeighting,
  lossWeights,
  sampleFlowTimes,
  sampleTimesteps,
  type TimestepSampling,
} from "../diffusion/losses.ts";
import type { Prediction } from "../diffusion/parameterization.ts";
import {
  classConditioning,
  type DiffusersConfig,
  resolveUNetConfig,
  unetForward,
} from "../models/unet/index.ts";
import { weightedMse } from "../nn/losses.ts";
import type { InputSpec } from "../runtime/compile.ts";
import { HostTensor } from "../tensor/host.ts";
import * as o from "../tensor/ops.ts";
import type { Rng } from "../tensor/rng.ts";
import type { LossFn } from "./train-step.ts";

export interface Objective {
  prediction: Prediction;
  /** ᾱ per training timestep (null for flow matching). */
  alphasCumprod: Float32Array | null;
  numTrainTimesteps: number;
  weighting: LossWeighting;
  /** How the noise level of each sample is drawn. */
  timesteps: TimestepSampling;
  /** Class-label table size (null: unconditional); the last entry is the "no class" label. */
  numClassEmbeds: number | null;
  condDropout: number;
}

/** Graph inputs of one training batch of `batch` images of size×size. */
export function batchSpecs(model: DiffusersConfig, batch: number, size: number): Record<string, InputSpec> {
  const cfg = resolveUNetConfig(model);
  const img = [batch, cfg.inChannels, size, size];
  const specs: Record<string, InputSpec> = {
    x0: { shape: img },
    noise: { shape: img },
    t: { shape: [batch] },
    a: { shape: [batch, 1, 1, 1] },
    s: { shape: [batch, 1, 1, 1] },
    w: { shape: [batch] },
  };
  if (classConditioning(cfg) === "table") specs["labels"] = { shape: [batch], dtype: "int64" };
  return specs;
}

/** The loss over a U-Net for a prediction type. */
export function diffusionLoss(model: DiffusersConfig, prediction: Prediction): LossFn {
  const cfg = resolveUNetConfig(model);
  return (scope, b) => {
    const x0 = b["x0"]!;
    const eps = b["noise"]!;
    const a = b["a"]!;
    const s = b["s"]!;
    const xt = o.add(o.mul(a, x0), o.mul(s, eps)); // [B, C, H, W]
    const pred = unetForward(scope, cfg, xt, b["t"]!, b["labels"]); // [B, C, H, W]
    const target =
      prediction === "epsilon"
        ? eps
        : prediction === "v"
          ? o.sub(o.mul(a, eps), o.mul(s, x0))
          : prediction === "x0"
            ? x0
            : o.sub(eps, x0);
    return weightedMse(pred, target, b["w"]!);
  };
}

/** The random part of one training batch, drawn from `rng` (use a per-step stream). */
export function drawBatch(
  obj: Objective,
  x0: HostTensor<"float32">,
  labels: HostTensor<"int64"> | null,
  rng: Rng,
): Record<string, HostTensor> {
  const n = x0.shape[0]!;
  const noise = new HostTensor(rng.normal(x0.size), x0.shape);
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
    sampleFlowTimes(rng, n, obj.timesteps).forEach((sig, i) => {
      a[i] = 1 - sig;
      s[i] = sig;
      t[i] = sig * obj.numTrainTimesteps;
      snrs.push(((1 - sig) / sig) ** 2);
    });
  }
  const w = Float32Array.from(lossWeights(obj.weighting, obj.prediction, snrs), (v) =>
    Number.isFinite(v) ? v : 0,
  );
  const feeds: Record<string, HostTensor> = {
    x0,
    noise,
    t: new HostTensor(t, [n]),
    a: new HostTensor(a, [n, 1, 1, 1]),
    s: new HostTensor(s, [n, 1, 1, 1]),
    w: new HostTensor(w, [n]),
  };
  if (obj.numClassEmbeds !== null) {
    const nullClass = BigInt(obj.numClassEmbeds - 1);
    const y = new BigInt64Array(n);
    for (let i = 0; i < n; i++) {
      const dropped = rng.nextUniform() < obj.condDropout;
      y[i] = dropped || !labels ? nullClass : labels.data[i]!;
    }
    feeds["labels"] = new HostTensor(y, [n]);
  }
  return feeds;
}
