/**
 * One denoiser type for every network parameterization.
 *
 * Every diffusion path here is Gaussian: x = α·x0 + σ·ε (Kingma et al. 2021, "Variational Diffusion
 * Models"). A `NoiseLevel` is one point (α, σ) of such a path together with the timestep `t` the network
 * is conditioned on there. Samplers work on the path their algorithm is written for:
 * - variance preserving (DDPM, DDIM, DPM-Solver): α = √ᾱ, σ = √(1 − ᾱ);
 * - variance exploding (Euler, Heun, k-diffusion; Karras et al. 2022): α = 1, x = x0 + σ·ε;
 * - rectified flow (Lipman et al. 2023, Esser et al. 2024): α = 1 − s, σ = s.
 *
 * A network predicts one of ε, x0, v = α·ε − σ·x0 (Salimans & Ho 2022; on the VP path) or the flow
 * velocity u = ε − x0, for inputs on the path it was trained on. `denoiser()` wraps it once into a
 * `Denoiser`: given x on any path, it rescales x onto the network's path (EDM's c_in), calls the network
 * and returns both estimates x̂0 and ε̂. In Karras et al.'s terms, x̂0 = c_skip·x + c_out·F(c_in·x);
 * `preconditioning()` gives those coefficients for the VE path.
 *
 * Arithmetic is float32, in the order diffusers uses, so samplers reproduce it to the last bit on paths
 * the network was trained on (those pass x through unscaled).
 */

import type { HostTensor } from "../tensor/host.ts";
import { asF32, type F32, f32, map, sqrt32, zip } from "./float32.ts";

/** What a network predicts: the noise ε, the data x0, v = αε − σx0, or the flow velocity ε − x0. */
export type Prediction = "epsilon" | "x0" | "v" | "flow";

/** One point of a Gaussian path x = alpha·x0 + sigma·eps, and the network's timestep there. */
export interface NoiseLevel {
  alpha: number;
  sigma: number;
  t: number;
}

/** A denoiser's two estimates at one noise level (and a learned variance, when the network has one). */
export interface Denoised {
  x0: F32;
  eps: F32;
  /** The extra output channels of a network that also predicts its variance (Nichol & Dhariwal 2021). */
  variance?: F32;
  /** The flow velocity ε − x0 as a flow network output it, on the path it was trained on. */
  velocity?: F32;
}

/** The one denoiser type every sampler uses. */
export type Denoiser = (x: F32, level: NoiseLevel) => Promise<Denoised>;

/** A raw network: (input, timestep) → prediction; sync or async. */
export type Network = (x: HostTensor, t: number) => HostTensor | Promise<HostTensor>;

/** A level of the variance-preserving path, from ᾱ: α = √ᾱ, σ = √(1 − ᾱ) (float32). */
export function vpLevel(alphaBar: number, t: number): NoiseLevel {
  return { alpha: sqrt32(alphaBar), sigma: sqrt32(f32(1 - alphaBar)), t };
}

/** The VP level with VE noise level σ: α = 1/√(σ² + 1), σ_t = σ·α (DPM-Solver's parameterization). */
export function vpLevelFromSigma(sigma: number, t: number): NoiseLevel {
  const alpha = f32(1 / sqrt32(f32(f32(sigma * sigma) + 1)));
  return { alpha, sigma: f32(sigma * alpha), t };
}

/** A level of the variance-exploding path x = x0 + σ·ε. */
export function veLevel(sigma: number, t: number): NoiseLevel {
  return { alpha: 1, sigma, t };
}

/** A level of the rectified-flow path x = (1 − s)·x0 + s·ε. */
export function flowLevel(s: number, t: number): NoiseLevel {
  return { alpha: f32(1 - s), sigma: s, t };
}

/** The path a network of this prediction type was trained on. */
export function pathOf(prediction: Prediction): "vp" | "flow" {
  return prediction === "flow" ? "flow" : "vp";
}

/**
 * The divisor c that moves x from `level`'s path onto the network's (x_net = x / c, i.e. c_in = 1/c);
 * exactly 1 when the level already lies on it. VE levels use diffusers' √(σ² + 1).
 */
export function inputDivisor(level: NoiseLevel, path: "vp" | "flow"): number {
  const { alpha, sigma } = level;
  if (path === "flow") {
    const c = alpha + sigma;
    return Math.abs(c - 1) < 1e-6 ? 1 : c;
  }
  if (alpha === 1) return sqrt32(f32(1 + f32(sigma * sigma)));
  const norm = alpha * alpha + sigma * sigma;
  return Math.abs(norm - 1) < 1e-6 ? 1 : Math.sqrt(norm);
}

/** x̂0 and ε̂ from a network output F for input x at `level` (x on the level's path). */
export function estimate(prediction: Prediction, out: F32, x: F32, level: NoiseLevel): Denoised {
  const { alpha, sigma } = level;
  switch (prediction) {
    case "epsilon":
      return { x0: zip(x, out, (xi, e) => f32(xi - f32(sigma * e)) / alpha), eps: out };
    case "x0":
      return { x0: out, eps: zip(x, out, (xi, x0) => f32(xi - f32(alpha * x0)) / sigma) };
    case "v": {
      const c = inputDivisor(level, "vp");
      const a = c === 1 ? alpha : f32(alpha / c);
      const s = c === 1 ? sigma : f32(sigma / c);
      const xn = c === 1 ? x : map(x, (v) => v / c);
      return {
        x0: zip(xn, out, (xi, v) => f32(a * xi) - f32(s * v)),
        eps: zip(xn, out, (xi, v) => f32(a * v) + f32(s * xi)),
      };
    }
    case "flow": {
      const c = inputDivisor(level, "flow");
      const s = c === 1 ? sigma : f32(sigma / c);
      const a = c === 1 ? alpha : f32(alpha / c);
      const xn = c === 1 ? x : map(x, (v) => v / c);
      const x0 = zip(xn, out, (xi, u) => xi - f32(s * u));
      const eps = zip(xn, out, (xi, u) => xi + f32(a * u));
      return c === 1 ? { x0, eps, velocity: out } : { x0, eps };
    }
  }
}

/**
 * The network's training target F = cx0·x0 + cε·ε at `level`, as its two coefficients — the inverse
 * of `estimate`, and the one definition of the target: the host (`target`) and the training graph
 * (train/objective.ts, fed these per sample) both use it.
 */
export function targetCoefficients(prediction: Prediction, level: NoiseLevel): { x0: number; eps: number } {
  switch (prediction) {
    case "epsilon":
      return { x0: 0, eps: 1 };
    case "x0":
      return { x0: 1, eps: 0 };
    case "v": {
      // v = α_n·ε − σ_n·x0 is defined on the VP path: α_n = α/c, σ_n = σ/c with c = √(α² + σ²).
      const c = inputDivisor(level, "vp");
      return { x0: -f32(level.sigma / c), eps: f32(level.alpha / c) };
    }
    case "flow":
      return { x0: -1, eps: 1 };
  }
}

/** The network's training target F for (x0, ε) at `level` — the inverse of `estimate`. */
export function target(prediction: Prediction, x0: F32, eps: F32, level: NoiseLevel): F32 {
  const c = targetCoefficients(prediction, level);
  if (c.x0 === 0 && c.eps === 1) return eps;
  if (c.x0 === 1 && c.eps === 0) return x0;
  if (c.x0 === -1 && c.eps === 1) return zip(x0, eps, (x, e) => e - x);
  return zip(x0, eps, (x, e) => f32(c.eps * e) + f32(c.x0 * x));
}

/** Karras et al.'s preconditioning of a network on the VE path: D(x; σ) = cSkip·x + cOut·F(cIn·x). */
export interface Preconditioning {
  cSkip: number;
  cOut: number;
  cIn: number;
}

/** c_skip, c_out and c_in (float64) for the VE noise level σ and a network's prediction type. */
export function preconditioning(prediction: Prediction, sigma: number): Preconditioning {
  const vpIn = 1 / Math.sqrt(sigma * sigma + 1);
  switch (prediction) {
    case "epsilon":
      return { cSkip: 1, cOut: -sigma, cIn: vpIn };
    case "x0":
      return { cSkip: 0, cOut: 1, cIn: vpIn };
    case "v":
      return { cSkip: 1 / (sigma * sigma + 1), cOut: -sigma * vpIn, cIn: vpIn };
    case "flow":
      return { cSkip: 1 / (1 + sigma), cOut: -sigma / (1 + sigma), cIn: 1 / (1 + sigma) };
  }
}

export interface DenoiserOptions {
  /**
   * The network also outputs its variance: when its output has twice the input's channels (dim 1), the
   * second half is returned as `variance` (diffusers' `learned` / `learned_range` variance types).
   */
  learnedVariance?: boolean;
}

function splitChannels(out: F32): [F32, F32] {
  const [n = 1, c2 = 0, ...rest] = out.shape;
  const inner = rest.reduce((a, b) => a * b, 1);
  const c = c2 / 2;
  const a = new Float32Array(n * c * inner);
  const b = new Float32Array(n * c * inner);
  for (let i = 0; i < n; i++) {
    a.set(out.data.subarray(i * c2 * inner, (i * c2 + c) * inner), i * c * inner);
    b.set(out.data.subarray((i * c2 + c) * inner, (i + 1) * c2 * inner), i * c * inner);
  }
  const shape = [n, c, ...rest];
  return [asF32({ data: a, shape }, "output"), asF32({ data: b, shape }, "variance")];
}

/** Wraps a network that predicts `prediction` into the one `Denoiser` type. */
export function denoiser(net: Network, prediction: Prediction, options: DenoiserOptions = {}): Denoiser {
  const path = pathOf(prediction);
  return async (x, level) => {
    const c = inputDivisor(level, path);
    const input = c === 1 ? x : map(x, (v) => v / c);
    let out = asF32(await net(input, level.t), "network output");
    let variance: F32 | undefined;
    if (options.learnedVariance && out.shape[1] === 2 * (x.shape[1] ?? 0))
      [out, variance] = splitChannels(out);
    if (out.size !== x.size) {
      throw new Error(
        `network output has shape [${out.shape.join(", ")}] but its input has [${x.shape.join(", ")}]; ` +
          "a denoising network must return one prediction per input element",
      );
    }
    if (out.shape.length !== x.shape.length) out = out.reshape(x.shape);
    const d = estimate(prediction, out, x, level);
    return variance ? { ...d, variance } : d;
  };
}

/**
 * The k-diffusion form D(x; σ) → x̂0 of a denoiser on the VE path; `timestepOf(σ)` gives the network's
 * timestep for σ (e.g. `sigmaToTimestep` over the training sigmas).
 */
export function edmDenoiser(
  d: Denoiser,
  timestepOf: (sigma: number) => number,
): (x: F32, sigma: number) => Promise<F32> {
  return async (x, sigma) => (await d(x, veLevel(sigma, timestepOf(sigma)))).x0;
}
