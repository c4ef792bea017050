/**
 * The toy 2-D benchmark's parts: three point-cloud datasets, an MLP denoiser over (x, t), its
 * training with the engine (one `compileTrainStep` session), a sampler-ready network, and the sliced
 * Wasserstein distance that scores samples against held-out data.
 *
 * - Datasets follow the toy densities of FFJORD (Grathwohl et al. 2019) and scikit-learn's
 *   `make_moons`, scaled to about unit spread (within ±2.5).
 * - The network is a residual SiLU MLP over Fourier features of x (Tancik et al. 2020) and a sinusoidal
 *   embedding of t; the features let a small network draw the checkerboard's sharp edges.
 * - Training is DDPM's L_simple (Ho et al. 2020): x_t = √ᾱ_t·x0 + √(1 − ᾱ_t)·ε with t uniform in
 *   {0, …, 999}, regress ε; or rectified flow (Lipman et al. 2023; Liu et al. 2023):
 *   x_s = (1 − s)·x0 + s·ε with s uniform in (0, 1), regress u = ε − x0, the network seeing t = 1000·s
 *   as diffusers' FlowMatchEulerDiscreteScheduler feeds it.
 * - The sliced Wasserstein distance (Rabin et al. 2011; Bonneel et al. 2015) is
 *   SW_p(P, Q) = (E_θ W_pᵖ(θᵀP, θᵀQ))^(1/p) over directions θ on the circle, each 1-D W_p exact from
 *   the sorted projections (the benchmark uses p = 1).
 */
import { addFlowNoise, addNoise, flowVelocity, noiseSchedule } from "../src/diffusion/index.ts";
import { linear, mse, silu, timestepEmbedding } from "../src/nn/index.ts";
import { compile } from "../src/runtime/compile.ts";
import type { CompiledGraph } from "../src/runtime/session.ts";
import { HostTensor } from "../src/tensor/host.ts";
import * as o from "../src/tensor/ops.ts";
import { initParams, ParamScope, type Params } from "../src/tensor/params.ts";
import { Rng } from "../src/tensor/rng.ts";
import type { Tensor } from "../src/tensor/symbolic.ts";
import { compileTrainStep, paramSpecsOf } from "../src/train/train-step.ts";

// ---------------------------------------------------------------------------------------------- data

export const DATASETS = ["8gaussians", "moons", "checkerboard"] as const;
export type DatasetName = (typeof DATASETS)[number];

/** n points [n, 2] (row-major x, y) from one of the toy densities. */
export function sampleDataset(name: DatasetName, n: number, rng: Rng): Float32Array {
  const out = new Float32Array(n * 2);
  for (let i = 0; i < n; i++) {
    let x: number;
    let y: number;
    switch (name) {
      case "8gaussians": {
        // eight modes on a circle of radius 2, each N(centre, 0.15²)
        const a = (rng.int(8) * Math.PI) / 4;
        x = 2 * Math.cos(a) + 0.15 * rng.nextNormal();
        y = 2 * Math.sin(a) + 0.15 * rng.nextNormal();
        break;
      }
      case "moons": {
        // make_moons(noise=0.07): upper arc (cos u, sin u), lower arc (1 − cos u, ½ − sin u), u ∈ [0, π],
        // centred at (½, ¼) and scaled by 1.6
        const u = Math.PI * rng.nextUniform();
        const upper = rng.int(2) === 0;
        const mx = upper ? Math.cos(u) : 1 - Math.cos(u);
        const my = upper ? Math.sin(u) : 0.5 - Math.sin(u);
        x = 1.6 * (mx - 0.5 + 0.07 * rng.nextNormal());
        y = 1.6 * (my - 0.25 + 0.07 * rng.nextNormal());
        break;
      }
      case "checkerboard": {
        // FFJORD's checkerboard: the 8 dark squares of a 4×4 board on [−2, 2]²
        x = 4 * rng.nextUniform() - 2;
        const v = rng.nextUniform() - 2 * rng.int(2);
        y = v + (Math.floor(x) & 1);
        break;
      }
    }
    out[2 * i] = x;
    out[2 * i + 1] = y;
  }
  return out;
}

// --------------------------------------------------------------------------------------------- model

export interface MlpConfig {
  /** Width of the hidden layers. */
  hidden: number;
  /** Number of hidden layers (each linear → SiLU). */
  layers: number;
  /** Size of the sinusoidal timestep embedding. */
  timeDim: number;
  /** Fourier features of x: this many frequencies per coordinate, geometric from 1 to `maxFreq` (0: none). */
  fourier: number;
  maxFreq: number;
}

export const DEFAULT_MLP: MlpConfig = { hidden: 128, layers: 3, timeDim: 64, fourier: 8, maxFreq: 6 };

/**
 * The denoiser: x [N, 2], t [N] (diffusers' timestep, 0…1000) → the network output [N, 2] (ε or the
 * flow velocity). x and its Fourier features [sin(f·x), cos(f·x)] are projected to the hidden width
 * and added to the embedding of t (sinusoidal, then a small MLP); the hidden layers are residual
 * (h + SiLU(W h)), then a linear read-out.
 */
export function mlpDenoiser(p: ParamScope, x: Tensor, t: Tensor, cfg: MlpConfig): Tensor {
  const temb = timestepEmbedding(t, cfg.timeDim, { flipSinToCos: true, freqShift: 0 }); // [N, timeDim]
  const tvec = linear(p.sub("time.1"), silu(linear(p.sub("time.0"), temb, cfg.hidden)), cfg.hidden); // [N, H]
  const nf = cfg.fourier;
  let feats = x; // [N, 2]
  if (nf > 0) {
    const f = Float32Array.from({ length: nf }, (_, k) => cfg.maxFreq ** (nf === 1 ? 0 : k / (nf - 1)));
    const arg = o.mul(o.reshape(x, [-1, 2, 1]), x.graph.constant(new HostTensor(f, [1, 1, nf]))); // [N, 2, F]
    feats = o.concat([x, o.reshape(o.concat([o.sin(arg), o.cos(arg)], 2), [-1, 4 * nf])], 1); // [N, 2 + 4F]
  }
  let h = silu(o.add(linear(p.sub("input"), feats, cfg.hidden), tvec)); // [N, H]
  for (let i = 0; i < cfg.layers; i++) {
    h = o.add(h, silu(linear(p.sub(`layers.${i}`), h, cfg.hidden))); // [N, H]
  }
  return linear(p.sub("output"), h, 2); // [N, 2]
}

// -------------------------------------------------------------------------------------------- training

export type Objective = "epsilon" | "flow";

/**
 * The β schedule every ε-model here trains and samples with: diffusers' `scaled_linear` (Stable
 * Diffusion's betas). DDPM's `linear` 1e-4…0.02 ends at σ = √((1 − ᾱ)/ᾱ) ≈ 157, far above the data's
 * scale of about 1, so half of its timesteps (and of the Euler and Heun ladders, which space timesteps
 * evenly) sit where the sample is pure noise; this one ends at σ ≈ 14.6 with ᾱ_T ≈ 0.005.
 */
export const EPS_SCHEDULE = {
  num_train_timesteps: 1000,
  beta_start: 0.00085,
  beta_end: 0.012,
  beta_schedule: "scaled_linear",
} as const;

export interface TrainOptions {
  objective: Objective;
  /** The training set [n, 2]; batches are drawn from it with replacement. */
  data: Float32Array;
  steps: number;
  batch: number;
  mlp?: MlpConfig;
  /** Peak learning rate (linear warm-up over the first 5 % of steps, cosine decay to a tenth). */
  lr?: number;
  /** EMA decay (with the usual warm-up min(decay, (1 + k)/(10 + k))). */
  emaDecay?: number;
  seed?: number;
  /** Intra-op threads of the training session. */
  threads?: number;
  onStep?: (step: number, loss: number) => void;
}

export interface Trained {
  /** The EMA weights (the raw weights when `emaDecay` is 0). */
  params: Params;
  mlp: MlpConfig;
  objective: Objective;
  /** The loss of every step. */
  losses: Float32Array;
}

/** Learning rate at step k of n: warm-up then cosine decay from `peak` to `peak / 10`. */
export function learningRate(k: number, n: number, peak: number): number {
  const warm = Math.max(1, Math.round(0.05 * n));
  if (k < warm) return (peak * (k + 1)) / warm;
  const u = (k - warm) / Math.max(1, n - warm);
  return peak * (0.1 + 0.45 * (1 + Math.cos(Math.PI * u)));
}

/** Trains one denoiser with the engine's fused train step (forward, backward, AdamW, EMA). */
export async function trainDenoiser(opts: TrainOptions): Promise<Trained> {
  const mlp = opts.mlp ?? DEFAULT_MLP;
  const { batch: n, steps } = opts;
  const peak = opts.lr ?? 1e-3;
  const emaDecay = opts.emaDecay ?? 0.999;
  const rng = new Rng(opts.seed ?? 0);
  const net = (scope: ParamScope, x: Tensor, t: Tensor): Tensor => mlpDenoiser(scope, x, t, mlp);
  const step = await compileTrainStep(
    (scope, b) => mse(net(scope, b["x"]!, b["t"]!), b["target"]!),
    { x: { shape: [n, 2] }, t: { shape: [n] }, target: { shape: [n, 2] } },
    { session: opts.threads === undefined ? {} : { threads: opts.threads }, ema: emaDecay > 0 },
  );
  const specs = paramSpecsOf((scope, g) => net(scope, g.input("x", [n, 2]), g.input("t", [n])));
  const state = step.initState(initParams(specs, rng.fold("init")));
  const alphaBar = noiseSchedule({
    kind: EPS_SCHEDULE.beta_schedule,
    numTrainTimesteps: EPS_SCHEDULE.num_train_timesteps,
    betaStart: EPS_SCHEDULE.beta_start,
    betaEnd: EPS_SCHEDULE.beta_end,
  }).alphasCumprod;
  const T = EPS_SCHEDULE.num_train_timesteps;
  const dataRng = rng.fold("batches");
  const noiseRng = rng.fold("noise");
  const count = opts.data.length / 2;
  const losses = new Float32Array(steps);
  try {
    for (let k = 0; k < steps; k++) {
      const x0 = new Float32Array(n * 2);
      for (let i = 0; i < n; i++) {
        const j = dataRng.int(count);
        x0[2 * i] = opts.data[2 * j]!;
        x0[2 * i + 1] = opts.data[2 * j + 1]!;
      }
      const x0t = new HostTensor<"float32">(x0, [n, 2]);
      const eps = new HostTensor<"float32">(noiseRng.normal(n * 2), [n, 2]);
      let xt: HostTensor<"float32">;
      let target: HostTensor<"float32">;
      let t: number[];
      if (opts.objective === "epsilon") {
        t = Array.from({ length: n }, () => dataRng.int(T)); // t ∈ {0, …, T − 1}
        xt = addNoise(
          x0t,
          eps,
          t.map((ti) => alphaBar[ti]!),
        );
        target = eps;
      } else {
        const s = Array.from({ length: n }, () => dataRng.nextUniform()); // s ∈ [0, 1)
        xt = addFlowNoise(x0t, eps, s);
        target = flowVelocity(x0t, eps);
        t = s.map((si) => si * T);
      }
      const decay = Math.min(emaDecay, (1 + k) / (10 + k));
      const r = await step.step(
        state,
        { x: xt, t: new HostTensor(Float32Array.from(t), [n]), target },
        learningRate(k, steps, peak),
        decay,
      );
      losses[k] = r.loss;
      opts.onStep?.(k, r.loss);
    }
    await step.sync(state);
  } finally {
    step.dispose();
  }
  return { params: state.ema ?? state.params, mlp, objective: opts.objective, losses };
}

/** Fresh parameters of an untrained denoiser (a baseline for the tests). */
export function untrainedDenoiser(objective: Objective, mlp: MlpConfig = DEFAULT_MLP, seed = 0): Trained {
  const specs = paramSpecsOf((scope, g) => mlpDenoiser(scope, g.input("x", [1, 2]), g.input("t", [1]), mlp));
  return {
    params: initParams(specs, new Rng(seed).fold("init")),
    mlp,
    objective,
    losses: new Float32Array(),
  };
}

/** Mean of `losses[from, to)`. */
export function meanLoss(losses: Float32Array, from: number, to: number): number {
  let s = 0;
  for (let i = from; i < to; i++) s += losses[i]!;
  return s / Math.max(1, to - from);
}

// ----------------------------------------------------------------------------------------- inference

/** A trained denoiser as the samplers' network `(x [n, 2], t) → output [n, 2]`, for batches of n. */
export class ToyNetwork {
  private constructor(
    private readonly graph: CompiledGraph,
    private readonly params: Params,
    readonly n: number,
  ) {}

  static async create(model: Trained, n: number, threads?: number): Promise<ToyNetwork> {
    const graph = await compile(
      { x: { shape: [n, 2] }, t: { shape: [n] } },
      ({ x, t }, g) => {
        return { out: mlpDenoiser(ParamScope.root(g), x, t, model.mlp) };
      },
      threads === undefined ? {} : { threads },
    );
    return new ToyNetwork(graph, model.params, n);
  }

  /** The network output at one timestep for every point. */
  readonly forward = async (x: HostTensor, t: number): Promise<HostTensor> => {
    if (x.shape[0] !== this.n)
      throw new Error(`ToyNetwork was compiled for ${this.n} points, got ${x.shape[0]}`);
    const feeds: Record<string, HostTensor> = { x, t: HostTensor.full([this.n], t) };
    for (const [k, v] of this.params) feeds[k] = v;
    const out = await this.graph.run(feeds);
    return out["out"]!;
  };

  dispose(): void {
    this.graph.dispose();
  }
}

// ------------------------------------------------------------------------------------------- metrics

export interface SlicedOptions {
  /** Number of directions θ (default 256). */
  projections?: number;
  /** The order p of W_p (default 1). */
  p?: number;
  /** Seed of the random offset of the directions (default 0). */
  seed?: number;
}

/**
 * W_pᵖ between two empirical measures on the line given as sorted values, any sizes: ∫₀¹ |F⁻¹(u) − G⁻¹(u)|ᵖ du,
 * exact, over the merged breakpoints of the two piecewise-constant quantile functions.
 */
function wpPower1d(a: Float64Array, b: Float64Array, p: number): number {
  const n = a.length;
  const m = b.length;
  let i = 0;
  let j = 0;
  let u = 0;
  let s = 0;
  while (i < n && j < m) {
    const ua = (i + 1) / n;
    const ub = (j + 1) / m;
    const next = Math.min(ua, ub);
    s += (next - u) * Math.abs(a[i]! - b[j]!) ** p;
    u = next;
    if (ua <= next) i++;
    if (ub <= next) j++;
  }
  return s;
}

/** Points [n, 2] projected on direction (c, s), sorted. */
function projectSorted(points: Float32Array, c: number, s: number): Float64Array {
  const n = points.length / 2;
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = c * points[2 * i]! + s * points[2 * i + 1]!;
  return out.sort();
}

/**
 * SW_p to a fixed reference point set [m, 2], for many point sets [n, 2] of any size: the directions θ
 * are equally spaced on the half circle with one random offset (a stratified estimate of E_θ; θ and
 * −θ give the same W), and the reference's sorted projections are computed once.
 */
export class SlicedWasserstein {
  private readonly dirs: readonly (readonly [number, number])[];
  private readonly sortedRef: readonly Float64Array[];
  private readonly p: number;

  constructor(reference: Float32Array, opts: SlicedOptions = {}) {
    const projections = opts.projections ?? 256;
    this.p = opts.p ?? 1;
    checkPoints(reference, "reference");
    const offset = new Rng(opts.seed ?? 0).nextUniform();
    this.dirs = Array.from({ length: projections }, (_, k) => {
      const th = (Math.PI * (k + offset)) / projections;
      return [Math.cos(th), Math.sin(th)] as const;
    });
    this.sortedRef = this.dirs.map(([c, s]) => projectSorted(reference, c, s));
  }

  /** SW_p(points, reference). */
  to(points: Float32Array): number {
    checkPoints(points, "points");
    let total = 0;
    this.dirs.forEach(([c, s], k) => {
      total += wpPower1d(projectSorted(points, c, s), this.sortedRef[k]!, this.p);
    });
    return (total / this.dirs.length) ** (1 / this.p);
  }
}

function checkPoints(x: Float32Array, what: string): void {
  if (x.length === 0 || x.length % 2 !== 0) {
    throw new Error(
      `sliced Wasserstein: ${what} must be a non-empty [n, 2] point set, got ${x.length} values`,
    );
  }
}

/** SW_p between two point sets [n, 2] and [m, 2] (see `SlicedWasserstein`). */
export function slicedWasserstein(a: Float32Array, b: Float32Array, opts: SlicedOptions = {}): number {
  return new SlicedWasserstein(b, opts).to(a);
}
