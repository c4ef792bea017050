/**
 * The host side of the training loss: targets, per-sample weights, timestep sampling and condition
 * dropout. (The mean squared error itself is computed in the training graph.)
 *
 * - Targets: ε (Ho et al. 2020, "L_simple"), x0, v (Salimans & Ho 2022) or the flow velocity ε − x0,
 *   from `parameterization.target`.
 * - Weightings are defined on the x0 error and converted to the chosen target's error, whose scale
 *   differs: ‖ε̂−ε‖² = SNR·‖x̂0−x0‖², ‖v̂−v‖² = (SNR+1)·‖x̂0−x0‖², ‖û−u‖² = (1+√SNR)²·‖x̂0−x0‖².
 *   `uniform` weighs the target's error by 1; `min-snr` uses min(SNR, γ) on the x0 error (Hang et al.
 *   2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy"); `edm` uses
 *   λ(σ) = (σ² + σ_data²)/(σ·σ_data)² with σ² = 1/SNR (Karras et al. 2022, Table 1).
 * - Timesteps: uniform or logit-normal (Esser et al. 2024) over the T training timesteps or the flow
 *   times s ∈ (0, 1), or EDM's log-normal σ (ln σ ~ N(P_mean, P_std²)).
 * - Classifier-free guidance trains one network for both cases by dropping the condition with
 *   probability p (Ho & Salimans 2022).
 */

import type { Rng } from "../tensor/rng.ts";
import type { Prediction } from "./parameterization.ts";

export { target as lossTarget } from "./parameterization.ts";

export type LossWeighting =
  | { kind: "uniform" }
  | { kind: "min-snr"; gamma: number }
  | { kind: "edm"; sigmaData?: number };

/** ‖target error‖² / ‖x0 error‖² for a prediction type at a given SNR. */
function targetScale(prediction: Prediction, snr: number): number {
  switch (prediction) {
    case "epsilon":
      return snr;
    case "x0":
      return 1;
    case "v":
      return snr + 1;
    case "flow":
      return (1 + Math.sqrt(snr)) ** 2;
  }
}

/** The weight of one sample's target MSE, given its SNR = α²/σ². */
export function lossWeight(weighting: LossWeighting, prediction: Prediction, snr: number): number {
  if (!(snr >= 0)) throw new Error(`SNR must be a non-negative number, got ${snr}`);
  switch (weighting.kind) {
    case "uniform":
      return 1;
    case "min-snr": {
      const { gamma } = weighting;
      if (!(gamma > 0)) throw new Error(`min-snr weighting needs gamma > 0, got ${gamma}`);
      // min(SNR, γ)/SNR for ε, written so that SNR = 0 gives its limit 1.
      if (prediction === "epsilon") return snr <= gamma ? 1 : gamma / snr;
      return Math.min(snr, gamma) / targetScale(prediction, snr);
    }
    case "edm": {
      const sd = weighting.sigmaData ?? 0.5;
      if (!(sd > 0)) throw new Error(`edm weighting needs sigmaData > 0, got ${sd}`);
      // λ(σ) = (σ² + σd²)/(σ σd)² = (1 + SNR·σd²)/σd² on the x0 error.
      const lambda = (1 + snr * sd * sd) / (sd * sd);
      if (prediction === "epsilon") return snr === 0 ? Number.POSITIVE_INFINITY : lambda / snr;
      return lambda / targetScale(prediction, snr);
    }
  }
}

/** Weights for a batch of SNRs. */
export function lossWeights(
  weighting: LossWeighting,
  prediction: Prediction,
  snrs: readonly number[],
): number[] {
  return snrs.map((s) => lossWeight(weighting, prediction, s));
}

/**
 * How training draws its noise levels: `uniform`, or `logit-normal` (u = sigmoid(mean + std·z), SD3's
 * default with mean 0, std 1), which spends more of the training on the middle of the path.
 */
export type TimestepSampling = { kind: "uniform" } | { kind: "logit-normal"; mean: number; std: number };

/**
 * n training timesteps in {0, …, T − 1}: uniform, or ⌊u·T⌋ with u drawn by `sampling` (a logit-normal
 * u puts most timesteps mid-schedule, few at the ends).
 */
export function sampleTimesteps(
  rng: Rng,
  n: number,
  numTrainTimesteps: number,
  sampling: TimestepSampling = { kind: "uniform" },
): number[] {
  if (sampling.kind === "uniform") return Array.from({ length: n }, () => rng.int(numTrainTimesteps));
  return sampleFlowTimes(rng, n, sampling).map((u) =>
    Math.min(numTrainTimesteps - 1, Math.floor(u * numTrainTimesteps)),
  );
}

/** n noise levels σ with ln σ ~ N(mean, std²) (EDM: P_mean = −1.2, P_std = 1.2). */
export function sampleLogNormalSigmas(rng: Rng, n: number, mean = -1.2, std = 1.2): number[] {
  return Array.from({ length: n }, () => Math.exp(mean + std * rng.nextNormal()));
}

/** n flow-matching times s ∈ (0, 1) (or fractions of the schedule), drawn by `sampling`. */
export function sampleFlowTimes(
  rng: Rng,
  n: number,
  sampling: TimestepSampling = { kind: "uniform" },
): number[] {
  if (sampling.kind === "uniform") return Array.from({ length: n }, () => rng.nextUniform());
  const { mean, std } = sampling;
  if (!(std > 0)) throw new Error(`logit-normal timestep sampling needs std > 0, got ${std}`);
  return Array.from({ length: n }, () => 1 / (1 + Math.exp(-(mean + std * rng.nextNormal()))));
}

/** Which samples train unconditionally: each is dropped (true) with probability p. */
export function conditionDropout(rng: Rng, n: number, p: number): boolean[] {
  if (!(p >= 0 && p <= 1)) throw new Error(`condition dropout probability must be in [0, 1], got ${p}`);
  return Array.from({ length: n }, () => rng.nextUniform() < p);
}
