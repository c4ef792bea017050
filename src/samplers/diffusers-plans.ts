/**
 * diffusers' `set_timesteps`, per scheduler class: which timesteps a run of N steps visits, the noise
 * levels between them, and the scale of the starting noise — as the ladders the samplers of this folder
 * walk. Reproduces diffusers v0.40 to the float32 value (see test/fixtures/diffusers-schedulers).
 */

import { f32, log32, numpyLog32, sqrt32 } from "../diffusion/float32.ts";
import {
  betaSigmas,
  exponentialSigmas,
  interp,
  karrasSigmas,
  shiftSigmas,
  sigmaToTimestepF32,
} from "../diffusion/ladders.ts";
import {
  karrasSigmasFromAlphaBar,
  linspace,
  noiseSchedule,
  torchLinspace32,
} from "../diffusion/schedules.ts";
import { arange, roundHalfEven, spacedTimesteps } from "../diffusion/spacing.ts";
import type {
  BetaConfig,
  DdimConfig,
  DdpmConfig,
  DpmSolverConfig,
  EulerAncestralConfig,
  EulerConfig,
  FlowMatchConfig,
  HeunConfig,
  LcmConfig,
  SchedulerConfig,
  SigmaSchedule,
} from "./diffusers-config.ts";
import type { AlphaBarStep, SigmaLevel } from "./types.ts";

export type Plan =
  | { sampler: "ddpm" | "ddim" | "lcm"; timesteps: number[]; initNoiseSigma: number; steps: AlphaBarStep[] }
  | {
      sampler: "euler" | "euler-ancestral" | "heun" | "dpm-solver" | "flow-match-euler";
      timesteps: number[];
      initNoiseSigma: number;
      ladder: SigmaLevel[];
    };

/** ᾱ of a beta config; `clampLast` sets ᾱ_T = 2⁻²⁴ under zero-SNR rescaling so that σ_max stays finite. */
export function alphasCumprodOf(c: BetaConfig, clampLast: boolean): Float32Array {
  const ac = noiseSchedule({
    kind: c.betaSchedule,
    numTrainTimesteps: c.numTrainTimesteps,
    betaStart: c.betaStart,
    betaEnd: c.betaEnd,
    trainedBetas: c.trainedBetas,
    rescaleZeroSnr: c.rescaleBetasZeroSnr,
  }).alphasCumprod;
  if (clampLast && c.rescaleBetasZeroSnr) ac[ac.length - 1] = 2 ** -24;
  return ac;
}

function checkRange(timesteps: readonly number[], T: number, className: string): void {
  for (const t of timesteps) {
    if (t < 0 || t > T - 1) {
      throw new Error(
        `${className}: timestep ${t} is outside 0..${T - 1}; lower steps_offset or the number of steps`,
      );
    }
  }
}

function checkSteps(n: number, T: number): void {
  if (!Number.isInteger(n) || n < 1) throw new Error(`steps must be a positive integer, got ${n}`);
  if (n > T) throw new Error(`steps (${n}) cannot exceed num_train_timesteps (${T})`);
}

function vpPlan(c: DdpmConfig | DdimConfig, n: number, ac: Float32Array): Plan {
  const T = c.numTrainTimesteps;
  const timesteps = spacedTimesteps(c.timestepSpacing, {
    numTrainTimesteps: T,
    steps: n,
    stepsOffset: c.stepsOffset,
  });
  checkRange(timesteps, T, c.className);
  const ddim = c.className === "DDIMScheduler";
  const final = ddim && !c.setAlphaToOne ? ac[0]! : 1;
  const steps = timesteps.map((t, i) => {
    // DDIM steps back by ⌊T/N⌋; DDPM to the next timestep of the list.
    const prev = ddim ? t - Math.floor(T / n) : (timesteps[i + 1] ?? -1);
    return { t, alphaBar: ac[t]!, alphaBarPrev: prev >= 0 ? ac[prev]! : final };
  });
  return { sampler: ddim ? "ddim" : "ddpm", timesteps, initNoiseSigma: 1, steps };
}

function lcmPlan(c: LcmConfig, n: number, ac: Float32Array): Plan {
  const T = c.numTrainTimesteps;
  const original = c.originalInferenceSteps;
  checkSteps(n, T);
  if (original > T) throw new Error(`LCMScheduler: original_inference_steps (${original}) exceeds ${T}`);
  if (n > original) {
    throw new Error(`LCMScheduler: steps (${n}) cannot exceed original_inference_steps (${original})`);
  }
  // The distillation schedule: every k-th timestep, k = ⌊T / original⌋; then N of them evenly by index.
  const k = Math.floor(T / original);
  const origin = Array.from({ length: original }, (_, i) => (i + 1) * k - 1).reverse();
  const timesteps = linspace(0, origin.length, n, false).map((v) => origin[Math.floor(v)]!);
  const final = c.setAlphaToOne ? 1 : ac[0]!;
  const steps = timesteps.map((t, i) => {
    const prev = timesteps[i + 1] ?? t;
    return { t, alphaBar: ac[t]!, alphaBarPrev: prev >= 0 ? ac[prev]! : final };
  });
  return { sampler: "lcm", timesteps, initNoiseSigma: 1, steps };
}

/** Euler-family timesteps: float32, `linspace` ones fractional. */
function discreteTimesteps(c: EulerConfig | EulerAncestralConfig | HeunConfig, n: number): number[] {
  const T = c.numTrainTimesteps;
  checkSteps(n, T);
  if (c.timestepSpacing === "linspace")
    return linspace(0, T - 1, n)
      .reverse()
      .map(f32);
  return spacedTimesteps(c.timestepSpacing, { numTrainTimesteps: T, steps: n, stepsOffset: c.stepsOffset });
}

function convertSigmas(
  schedule: SigmaSchedule,
  sigmas: readonly number[],
  n: number,
  range: { min: number | null; max: number | null } = { min: null, max: null },
): number[] {
  const lo = range.min ?? sigmas[sigmas.length - 1]!;
  const hi = range.max ?? sigmas[0]!;
  if (schedule === "karras") return karrasSigmas(n, lo, hi);
  if (schedule === "exponential") return exponentialSigmas(n, lo, hi);
  if (schedule === "beta") return betaSigmas(n, lo, hi);
  return [...sigmas];
}

function initNoiseSigma(sigmas: ArrayLike<number>, spacing: string): number {
  let max = 0;
  for (let i = 0; i < sigmas.length; i++) max = Math.max(max, sigmas[i]!);
  return spacing === "linspace" || spacing === "trailing" ? max : sqrt32(f32(f32(max * max) + 1));
}

function ladderOf(sigmas: ArrayLike<number>, timesteps: readonly number[]): SigmaLevel[] {
  return timesteps
    .map((t, i) => ({ sigma: sigmas[i]!, t }))
    .concat([{ sigma: sigmas[timesteps.length]!, t: Number.NaN }]);
}

function eulerPlan(c: EulerConfig | EulerAncestralConfig | HeunConfig, n: number, ac: Float32Array): Plan {
  let timesteps = discreteTimesteps(c, n);
  checkRange(timesteps, c.numTrainTimesteps, c.className);
  const all = karrasSigmasFromAlphaBar(ac);
  const logSigmas = all.map(numpyLog32);
  const index = Float64Array.from(all, (_, i) => i);
  let sigmas: number[];
  if (c.className === "EulerDiscreteScheduler" && c.interpolationType === "log_linear") {
    sigmas = Array.from(torchLinspace32(Math.log(all[all.length - 1]!), Math.log(all[0]!), n + 1), (v) =>
      f32(Math.exp(v)),
    );
  } else {
    sigmas = timesteps.map((t) => interp(t, index, all));
  }
  const schedule = c.className === "EulerAncestralDiscreteScheduler" ? "interpolated" : c.sigmaSchedule;
  if (schedule !== "interpolated") {
    const range = c.className === "EulerDiscreteScheduler" ? { min: c.sigmaMin, max: c.sigmaMax } : undefined;
    sigmas = convertSigmas(schedule, sigmas, n, range);
    timesteps = sigmas.map((s) => f32(sigmaToTimestepF32(s, logSigmas)));
  }
  const last = c.className === "EulerDiscreteScheduler" && c.finalSigmasType === "sigma_min" ? all[0]! : 0;
  const ladderSigmas = Float32Array.from([...sigmas, last]);
  if (
    c.className === "EulerDiscreteScheduler" &&
    c.timestepType === "continuous" &&
    c.predictionType === "v_prediction"
  ) {
    timesteps = timesteps.map((_, i) => f32(0.25 * log32(ladderSigmas[i]!)));
  }
  const init = initNoiseSigma(ladderSigmas, c.timestepSpacing);
  const ladder = ladderOf(ladderSigmas, timesteps);
  if (c.className === "HeunDiscreteScheduler") {
    // Heun evaluates twice per step but once on the last: t0, t1, t1, …, t_{N−1}, t_{N−1}.
    const evaluated = [timesteps[0]!, ...timesteps.slice(1).flatMap((t) => [t, t])];
    return { sampler: "heun", timesteps: evaluated, initNoiseSigma: init, ladder };
  }
  const sampler = c.className === "EulerDiscreteScheduler" ? "euler" : "euler-ancestral";
  return { sampler, timesteps, initNoiseSigma: init, ladder };
}

function dpmPlan(c: DpmSolverConfig, n: number, ac: Float32Array): Plan {
  const T = c.numTrainTimesteps;
  checkSteps(n, T);
  // Clip the smallest log-SNRs λ = log √ᾱ − log √(1 − ᾱ) below lambda_min_clipped (cosine schedules).
  let clipped = 0;
  for (let i = 0; i < T; i++) {
    const a = ac[i]!;
    if (f32(log32(sqrt32(a)) - log32(sqrt32(f32(1 - a)))) < c.lambdaMinClipped) clipped++;
  }
  const last = T - clipped;
  let timesteps: number[];
  if (c.timestepSpacing === "linspace") {
    timesteps = linspace(0, last - 1, n + 1)
      .map(roundHalfEven)
      .reverse()
      .slice(0, n);
  } else if (c.timestepSpacing === "leading") {
    const ratio = Math.floor(last / (n + 1));
    timesteps = Array.from({ length: n }, (_, i) => (n - i) * ratio + c.stepsOffset);
  } else {
    timesteps = arange(last, 0, -T / n).map((v) => roundHalfEven(v) - 1);
  }
  const all = karrasSigmasFromAlphaBar(ac);
  const logSigmas = all.map(numpyLog32);
  // Karras and uniform-λ timesteps are rounded, except under the cosine schedule (truncated, as diffusers).
  const toInt = (t: number) => (c.betaSchedule === "squaredcos_cap_v2" ? Math.trunc(t) : roundHalfEven(t));
  const sigmaMin = all[0]!;
  const sigmaMax = all[T - 1]!;
  let sigmas: number[];
  switch (c.sigmaSchedule) {
    case "karras":
      sigmas = karrasSigmas(n, sigmaMin, sigmaMax);
      timesteps = sigmas.map((s) => toInt(sigmaToTimestepF32(s, logSigmas)));
      break;
    case "lu": {
      // Uniform in log σ between the table's ends (Lu et al.'s uniform-λ steps).
      const [lo, hi] = [logSigmas[0]!, logSigmas[T - 1]!];
      sigmas = linspace(0, 1, n).map((r) => Math.exp(hi + r * (lo - hi)));
      timesteps = sigmas.map((s) => toInt(sigmaToTimestepF32(s, logSigmas)));
      break;
    }
    case "exponential":
    case "beta":
      sigmas =
        c.sigmaSchedule === "beta"
          ? betaSigmas(n, sigmaMin, sigmaMax)
          : exponentialSigmas(n, sigmaMin, sigmaMax);
      timesteps = sigmas.map((s) => Math.trunc(sigmaToTimestepF32(s, logSigmas)));
      break;
    case "flow": {
      const shifted = shiftSigmas(
        linspace(1, 1 / T, n + 1).map((a) => 1 - a),
        c.flowShift,
      );
      sigmas = shifted.reverse().slice(0, n);
      timesteps = sigmas.map((s) => Math.trunc(s * T));
      break;
    }
    default:
      sigmas = timesteps.map((t) =>
        interp(
          t,
          Float64Array.from(all, (_, i) => i),
          all,
        ),
      );
  }
  checkRange(timesteps, T, c.className);
  const final = c.finalSigmasType === "sigma_min" ? sigmaMin : 0;
  const ladder = ladderOf(Float32Array.from([...sigmas, final]), timesteps);
  return { sampler: "dpm-solver", timesteps, initNoiseSigma: 1, ladder };
}

function flowPlan(c: FlowMatchConfig, n: number): Plan {
  const T = c.numTrainTimesteps;
  checkSteps(n, T);
  // The training sigmas t/T, shifted once in float32 at construction; their ends bound the ladder.
  const shift32 = (s: number) => f32(f32(f32(c.shift) * s) / f32(1 + f32(f32(c.shift - 1) * s)));
  const sigmaMax = shift32(f32(T / T));
  const sigmaMin = shift32(f32(1 / T));
  let sigmas = linspace(sigmaMax * T, sigmaMin * T, n).map((t) => t / T);
  sigmas = shiftSigmas(sigmas, c.shift);
  if (c.shiftTerminal !== null) {
    // Stretch so that the last sigma is exactly shift_terminal.
    const scale = (1 - sigmas[sigmas.length - 1]!) / (1 - c.shiftTerminal);
    sigmas = sigmas.map((s) => 1 - (1 - s) / scale);
  }
  sigmas = convertSigmas(c.sigmaSchedule, sigmas, n);
  let s32 = Float32Array.from(sigmas);
  let end = 0;
  if (c.invertSigmas) {
    s32 = s32.map((s) => 1 - s);
    end = 1;
  }
  const timesteps = Array.from(s32, (s) => f32(s * T));
  const ladder = ladderOf(Float32Array.from([...s32, end]), timesteps);
  return { sampler: "flow-match-euler", timesteps, initNoiseSigma: 1, ladder };
}

/** The sampling plan diffusers' set_timesteps(numSteps) makes for a config. */
export function planFor(c: SchedulerConfig, n: number, ac: Float32Array | null): Plan {
  switch (c.className) {
    case "DDPMScheduler":
    case "DDIMScheduler":
      return vpPlan(c, n, ac!);
    case "LCMScheduler":
      return lcmPlan(c, n, ac!);
    case "EulerDiscreteScheduler":
    case "EulerAncestralDiscreteScheduler":
    case "HeunDiscreteScheduler":
      return eulerPlan(c, n, ac!);
    case "DPMSolverMultistepScheduler":
      return dpmPlan(c, n, ac!);
    case "FlowMatchEulerDiscreteScheduler":
      return flowPlan(c, n);
  }
}
