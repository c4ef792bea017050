/**
 * What every sampler shares: the ladders it walks, the noise it is handed, and the per-step callback.
 *
 * Samplers are pure functions `(denoise, x, ladder, options) → x`: the loop is visible in each file, all
 * randomness comes in through `noise`, and there is no hidden step counter. Two ladder shapes exist:
 * - `SigmaLevel[]` (N + 1 levels, step i goes from level i to level i + 1) for samplers written in σ
 *   (Euler, Heun, Euler ancestral, DPM-Solver, flow matching);
 * - `AlphaBarStep[]` (one entry per step, with the ᾱ it lands on) for DDPM, DDIM and LCM, whose reference
 *   forms step from ᾱ_t to an ᾱ_prev that need not be the next step's (DDIM steps by T/N).
 */

import type { F32 } from "../diffusion/float32.ts";
import { HostTensor } from "../tensor/host.ts";
import { Rng } from "../tensor/rng.ts";

/** A noise level σ of a ladder and the timestep the network is conditioned on there. */
export interface SigmaLevel {
  sigma: number;
  /** The network's timestep at this level (unused for the last level of a ladder). */
  t: number;
}

/** One step of an ᾱ sampler: the network sees timestep t at ᾱ_t; the step lands on ᾱ_prev. */
export interface AlphaBarStep {
  t: number;
  alphaBar: number;
  alphaBarPrev: number;
}

/** Fresh standard Gaussian noise of a shape, called each time a sampler needs it. */
export type NoiseFn = (shape: readonly number[]) => Float32Array;

/** Reported after every step: its index, the timestep the network saw, the new x and x̂0. */
export interface StepInfo {
  i: number;
  t: number;
  x: F32;
  x0: F32;
}

export type OnStep = (info: StepInfo) => void | Promise<void>;

export interface SamplerOptions {
  onStep?: OnStep;
}

export interface StochasticOptions extends SamplerOptions {
  /** The Gaussian noise source (e.g. `gaussianNoise(seed)`). */
  noise: NoiseFn;
}

/** A NoiseFn drawing from a seeded Philox stream. */
export function gaussianNoise(seed: number | Rng = 0): NoiseFn {
  const rng = typeof seed === "number" ? new Rng(seed) : seed;
  return (shape) => rng.normal(shape.reduce((a, b) => a * b, 1));
}

/** Draws noise shaped like x, checking what the noise source returned. */
export function drawNoise(noise: NoiseFn, like: F32): F32 {
  const z = noise(like.shape);
  if (!(z instanceof Float32Array) || z.length !== like.size) {
    throw new Error(
      `noise(shape) must return a Float32Array of ${like.size} values, got ${z?.length} values`,
    );
  }
  return new HostTensor(z, like.shape);
}
