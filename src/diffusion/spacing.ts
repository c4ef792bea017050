/**
 * Timestep spacing: which of the T training timesteps a sampler with N steps visits (Lin et al. 2023,
 * "Common Diffusion Noise Schedules and Sample Steps are Flawed", Table 2):
 * - `linspace`: round(linspace(0, T−1, N)), reversed;
 * - `leading`:  arange(N)·⌊T/N⌋ + steps_offset, reversed (T = 1000, N = 10: 900 … 0);
 * - `trailing`: round(arange(T, 0, −T/N)) − 1 (999 … 99), which always starts at the noisiest timestep.
 *
 * The numpy semantics the reference relies on are reproduced: round half to even (25 steps of `linspace`
 * give 166 and 832) and numpy's float `arange`, which steps by (start + step) − start.
 */

import { linspace } from "./schedules.ts";

export type TimestepSpacing = "linspace" | "leading" | "trailing";

/** numpy.round / rint: round half to even. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** numpy.arange(start, stop, step) for floats: ⌈(stop − start)/step⌉ points start + i·((start + step) − start). */
export function arange(start: number, stop: number, step: number): number[] {
  if (step === 0) throw new Error("arange: step must not be 0");
  const n = Math.max(0, Math.ceil((stop - start) / step));
  const out: number[] = [];
  const delta = start + step - start;
  for (let i = 0; i < n; i++) out.push(i === 0 ? start : i === 1 ? start + step : start + i * delta);
  return out;
}

export interface SpacingOptions {
  /** T, the number of training timesteps. */
  numTrainTimesteps: number;
  /** N, the number of sampling steps. */
  steps: number;
  /** Added to `leading` timesteps (Stable Diffusion uses 1). */
  stepsOffset?: number;
  /** Round `linspace` timesteps to integers (DDPM/DDIM do; Euler-type samplers keep them fractional). */
  round?: boolean;
}

/** The timesteps of a spacing, largest first. */
export function spacedTimesteps(spacing: TimestepSpacing, options: SpacingOptions): number[] {
  const { numTrainTimesteps: T, steps: n, stepsOffset = 0, round = true } = options;
  if (!Number.isInteger(n) || n < 1) throw new Error(`steps must be a positive integer, got ${n}`);
  if (n > T) throw new Error(`steps (${n}) cannot exceed the ${T} training timesteps`);
  switch (spacing) {
    case "linspace": {
      const t = linspace(0, T - 1, n).reverse();
      return round ? t.map(roundHalfEven) : t;
    }
    case "leading": {
      const ratio = Math.floor(T / n);
      const t: number[] = [];
      for (let i = n - 1; i >= 0; i--) t.push(i * ratio + stepsOffset);
      return t;
    }
    case "trailing":
      return arange(T, 0, -T / n).map((v) => roundHalfEven(v) - 1);
  }
}
