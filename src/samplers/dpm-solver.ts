/**
 * Multistep DPM-Solver (Lu et al. 2022, "DPM-Solver", arXiv:2206.00927) and DPM-Solver++ (Lu et al. 2022,
 * "DPM-Solver++", arXiv:2211.01095, which also gives the SDE variants; k-diffusion's
 * `sample_dpmpp_2m` and `sample_dpmpp_2m_sde`).
 *
 * In log-SNR time λ = log(α/σ), with h = λ_next − λ_i, DPM-Solver++ integrates the data prediction x̂0:
 *   order 1:  x_next = (σ_next/σ_i)·x − α_next·(e^{−h} − 1)·x̂0_i                       (= DDIM)
 *   order 2M: … − ½·α_next·(e^{−h} − 1)·D1,  D1 = (x̂0_i − x̂0_{i−1})·h/h_{i−1}   (midpoint)
 * and the SDE variant adds σ_next·√(1 − e^{−2h})·z with e^{−h}-damped coefficients. `dpmsolver` and
 * `sde-dpmsolver` integrate ε̂ instead; order 3 uses two previous outputs. With σ_next = 0 the log-SNR
 * is +∞ and h = ∞: e^{−h} = 0 and the step returns x̂0 (infinities flow; no NaN).
 *
 * x lives on the variance-preserving path; the ladder holds VE sigmas σ_i (α = 1/√(1 + σ²)), or flow
 * sigmas with `flow` (α = 1 − σ). Float32 arithmetic in diffusers' order (DPMSolverMultistepScheduler).
 */

import { exp32, type F32, f32, log32, map, sqrt32, zip } from "../diffusion/float32.ts";
import {
  type Denoiser,
  flowLevel,
  type NoiseLevel,
  vpLevelFromSigma,
} from "../diffusion/parameterization.ts";
import { drawNoise, type NoiseFn, type SamplerOptions, type SigmaLevel } from "./types.ts";

export type DpmAlgorithm = "dpmsolver++" | "sde-dpmsolver++" | "dpmsolver" | "sde-dpmsolver";

export interface DpmSolverOptions extends SamplerOptions {
  algorithm?: DpmAlgorithm;
  /** 1, 2 (default) or 3. */
  order?: 1 | 2 | 3;
  /** The second-order formula: `midpoint` (default) or `heun`. */
  solverType?: "midpoint" | "heun";
  /** Lower the order on the last steps when there are fewer than 15 (default true). */
  lowerOrderFinal?: boolean;
  /** Take the last step with Euler (first order) always. */
  eulerAtFinal?: boolean;
  /** The ladder holds flow-matching sigmas: α = 1 − σ. */
  flow?: boolean;
  /** Needed by the SDE variants. */
  noise?: NoiseFn;
}

interface Coefficients {
  alpha: number;
  sigma: number;
  lambda: number;
}

function coefficients(level: NoiseLevel): Coefficients {
  return { alpha: level.alpha, sigma: level.sigma, lambda: f32(log32(level.alpha) - log32(level.sigma)) };
}

/** Σ c_k·v_k in float32, left to right: ((c0·v0 ∘ c1·v1) ∘ c2·v2) …, with ∘ = + (signs folded into c). */
function combine(terms: readonly [number, F32][]): F32 {
  const [c0, v0] = terms[0]!;
  let acc = map(v0, (a) => f32(c0 * a));
  for (let k = 1; k < terms.length; k++) {
    const [c, v] = terms[k]!;
    acc = zip(acc, v, (a, b) => a + f32(c * b));
  }
  return acc;
}

export async function dpmSolver(
  denoise: Denoiser,
  x: F32,
  ladder: readonly SigmaLevel[],
  options: DpmSolverOptions = {},
): Promise<F32> {
  const algorithm = options.algorithm ?? "dpmsolver++";
  const order = options.order ?? 2;
  const solverType = options.solverType ?? "midpoint";
  const lowerOrderFinal = options.lowerOrderFinal ?? true;
  const sde = algorithm.startsWith("sde-");
  const dataPrediction = algorithm.endsWith("++");
  const n = ladder.length - 1;
  if (sde && order === 3)
    throw new Error(`dpmSolver: ${algorithm} has no third-order update; use order 1 or 2`);
  const level = (l: SigmaLevel): NoiseLevel =>
    options.flow ? flowLevel(l.sigma, l.t) : vpLevelFromSigma(l.sigma, l.t);
  const outputs: F32[] = [];
  let lowerOrderNums = 0;
  for (let i = 0; i < n; i++) {
    const here = level(ladder[i]!);
    const den = await denoise(x, here);
    const m0 = dataPrediction ? den.x0 : den.eps;
    outputs.unshift(m0);
    if (outputs.length > 3) outputs.pop();
    const z = sde ? drawNoise(requireNoise(options.noise), x) : undefined;

    const lastStep = i === n - 1;
    const finalFirstOrder =
      lastStep && (options.eulerAtFinal || (lowerOrderFinal && n < 15) || ladder[n]!.sigma === 0);
    const finalSecondOrder = i === n - 2 && lowerOrderFinal && n < 15;
    let stepOrder: 1 | 2 | 3 = 3;
    if (order === 1 || lowerOrderNums < 1 || finalFirstOrder) stepOrder = 1;
    else if (order === 2 || lowerOrderNums < 2 || finalSecondOrder) stepOrder = 2;

    const t = coefficients(level(ladder[i + 1]!));
    const s0 = coefficients(here);
    const h = f32(t.lambda - s0.lambda);

    // D0 and the finite differences D1 (and D2) of the multistep history, in λ.
    let d1: F32 | undefined;
    let d2: F32 | undefined;
    if (stepOrder >= 2) {
      const s1 = coefficients(level(ladder[i - 1]!));
      const r0 = f32(f32(s0.lambda - s1.lambda) / h);
      const m1 = outputs[1]!;
      if (stepOrder === 2) {
        d1 = zip(m0, m1, (a, b) => f32(f32(1 / r0) * f32(a - b)));
      } else {
        const s2 = coefficients(level(ladder[i - 2]!));
        const r1 = f32(f32(s1.lambda - s2.lambda) / h);
        const m2 = outputs[2]!;
        const d10 = zip(m0, m1, (a, b) => f32(f32(1 / r0) * f32(a - b)));
        const d11 = zip(m1, m2, (a, b) => f32(f32(1 / r1) * f32(a - b)));
        const w = f32(r0 / f32(r0 + r1));
        const v = f32(1 / f32(r0 + r1));
        d1 = zip(d10, d11, (a, b) => a + f32(w * f32(a - b)));
        d2 = zip(d10, d11, (a, b) => f32(v * f32(a - b)));
      }
    }

    const c = updateCoefficients(algorithm, solverType, stepOrder, s0, t, h);
    const terms: [number, F32][] = [
      [c.x, x],
      [c.d0, m0],
    ];
    if (d1) terms.push([c.d1, d1]);
    if (d2) terms.push([c.d2, d2]);
    if (z) terms.push([c.noise, z]);
    const next = combine(terms);
    x = next;
    if (lowerOrderNums < order) lowerOrderNums++;
    await options.onStep?.({ i, t: ladder[i]!.t, x, x0: den.x0 });
  }
  return x;
}

/**
 * The coefficients of one update x_next = c.x·x + c.d0·D0 + c.d1·D1 + c.d2·D2 + c.noise·z, from level s0
 * to level t with log-SNR step h (Lu et al.'s eqs., in diffusers' float32 order; signs folded in).
 */
function updateCoefficients(
  algorithm: DpmAlgorithm,
  solverType: "midpoint" | "heun",
  order: 1 | 2 | 3,
  s0: Coefficients,
  t: Coefficients,
  h: number,
): { x: number; d0: number; d1: number; d2: number; noise: number } {
  const expNegH = exp32(f32(-h));
  const expH = exp32(h);
  if (algorithm === "dpmsolver++") {
    // x_t = (σ_t/σ_s)·x − α_t(e^{−h} − 1)·D0 − ½α_t(e^{−h} − 1)·D1            (midpoint)
    //                                  + α_t((e^{−h} − 1)/h + 1)·D1            (heun, order 3)
    //                                  − α_t((e^{−h} − 1 + h)/h² − ½)·D2        (order 3)
    const c0 = f32(t.alpha * f32(expNegH - 1));
    const heun = f32(t.alpha * f32(f32(f32(expNegH - 1) / h) + 1));
    const d1 = order === 3 || solverType === "heun" ? heun : -f32(0.5 * c0);
    const d2 = -f32(t.alpha * f32(f32(f32(f32(expNegH - 1) + h) / f32(h * h)) - 0.5));
    return { x: f32(t.sigma / s0.sigma), d0: -c0, d1, d2, noise: 0 };
  }
  if (algorithm === "dpmsolver") {
    // x_t = (α_t/α_s)·x − σ_t(e^h − 1)·D0 − ½σ_t(e^h − 1)·D1 (midpoint) − σ_t((e^h − 1)/h − 1)·D1 (heun)
    //       − σ_t((e^h − 1 − h)/h² − ½)·D2
    const c0 = f32(t.sigma * f32(expH - 1));
    const heun = -f32(t.sigma * f32(f32(f32(expH - 1) / h) - 1));
    const d1 = order === 3 || solverType === "heun" ? heun : -f32(0.5 * c0);
    const d2 = -f32(t.sigma * f32(f32(f32(f32(expH - 1) - h) / f32(h * h)) - 0.5));
    return { x: f32(t.alpha / s0.alpha), d0: -c0, d1, d2, noise: 0 };
  }
  if (algorithm === "sde-dpmsolver++") {
    // x_t = (σ_t/σ_s)e^{−h}·x + α_t(1 − e^{−2h})·(D0 + ½D1) + σ_t√(1 − e^{−2h})·z
    const exp2 = exp32(f32(-2 * h));
    const c0 = f32(t.alpha * f32(1 - exp2));
    const heun = f32(t.alpha * f32(f32(f32(1 - exp2) / f32(-2 * h)) + 1));
    return {
      x: f32(f32(t.sigma / s0.sigma) * expNegH),
      d0: c0,
      d1: solverType === "heun" ? heun : f32(0.5 * c0),
      d2: 0,
      noise: f32(t.sigma * sqrt32(f32(1 - exp2))),
    };
  }
  // sde-dpmsolver: x_t = (α_t/α_s)·x − 2σ_t(e^h − 1)·D0 − σ_t(e^h − 1)·D1 + σ_t√(e^{2h} − 1)·z
  const exp2 = exp32(f32(2 * h));
  const c0 = f32(t.sigma * f32(expH - 1));
  const heun = -f32(2 * f32(t.sigma * f32(f32(f32(expH - 1) / h) - 1)));
  return {
    x: f32(t.alpha / s0.alpha),
    d0: -f32(2 * c0),
    d1: solverType === "heun" ? heun : -c0,
    d2: 0,
    noise: f32(t.sigma * sqrt32(f32(exp2 - 1))),
  };
}

function requireNoise(noise: NoiseFn | undefined): NoiseFn {
  if (!noise) throw new Error("dpmSolver: the SDE variants draw noise; pass options.noise");
  return noise;
}

/** DPM-Solver++(2M) (Lu et al. 2022), the usual deterministic choice. */
export function dpmSolverPP2M(
  denoise: Denoiser,
  x: F32,
  ladder: readonly SigmaLevel[],
  options: SamplerOptions = {},
) {
  return dpmSolver(denoise, x, ladder, { ...options, algorithm: "dpmsolver++", order: 2 });
}

/** SDE-DPM-Solver++(2M): the stochastic variant; `noise` is drawn on every step. */
export function sdeDpmSolverPP2M(
  denoise: Denoiser,
  x: F32,
  ladder: readonly SigmaLevel[],
  options: SamplerOptions & { noise: NoiseFn },
) {
  return dpmSolver(denoise, x, ladder, { ...options, algorithm: "sde-dpmsolver++", order: 2 });
}
