// The sampler contract: every sampler (through the diffusers-compatible Scheduler, which maps each class
// onto its sampler function) keeps shapes, is deterministic under a seed, ends on σ = 0 with x = x̂0, and
// with a denoiser that knows the data exactly recovers it: a point mass exactly, a Gaussian in
// distribution.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { timestepToSigma } from "../../src/diffusion/ladders.ts";
import { karrasSigmasFromAlphaBar } from "../../src/diffusion/schedules.ts";
import { Scheduler } from "../../src/samplers/scheduler.ts";
import type { StepInfo } from "../../src/samplers/types.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import { Rng } from "../../src/tensor/rng.ts";
import { relError } from "./fixtures.ts";

const base = { beta_schedule: "scaled_linear", beta_start: 0.00085, beta_end: 0.012 };
interface Case {
  name: string;
  config: Record<string, unknown>;
  stochastic: boolean;
  steps: number;
  /** The ladder ends at σ_min > 0 (diffusers' final_sigmas_type "sigma_min"): x̂0 is approached, not reached. */
  endsAbove0?: boolean;
}
const CASES: Case[] = [
  {
    name: "DDPM",
    config: { _class_name: "DDPMScheduler", ...base, clip_sample: false },
    stochastic: true,
    steps: 50,
  },
  {
    name: "DDIM",
    config: { _class_name: "DDIMScheduler", ...base, clip_sample: false },
    stochastic: false,
    steps: 50,
  },
  {
    name: "DDIM v-prediction, trailing",
    config: {
      _class_name: "DDIMScheduler",
      ...base,
      clip_sample: false,
      prediction_type: "v_prediction",
      timestep_spacing: "trailing",
    },
    stochastic: false,
    steps: 50,
  },
  {
    name: "DPM-Solver++ 2M",
    config: { _class_name: "DPMSolverMultistepScheduler", ...base },
    stochastic: false,
    steps: 30,
  },
  {
    name: "DPM-Solver++ 2M Karras",
    config: { _class_name: "DPMSolverMultistepScheduler", ...base, use_karras_sigmas: true },
    stochastic: false,
    steps: 30,
  },
  {
    name: "SDE-DPM-Solver++ 2M",
    config: { _class_name: "DPMSolverMultistepScheduler", ...base, algorithm_type: "sde-dpmsolver++" },
    stochastic: true,
    steps: 50,
  },
  {
    name: "DPM-Solver++ 3M, x0-prediction",
    config: {
      _class_name: "DPMSolverMultistepScheduler",
      ...base,
      solver_order: 3,
      prediction_type: "sample",
    },
    stochastic: false,
    steps: 30,
  },
  {
    name: "DPM-Solver++ 2M heun, Euler at the final step",
    config: {
      _class_name: "DPMSolverMultistepScheduler",
      ...base,
      solver_type: "heun",
      euler_at_final: true,
    },
    stochastic: false,
    steps: 30,
  },
  {
    name: "SDE-DPM-Solver++ 2M heun",
    config: {
      _class_name: "DPMSolverMultistepScheduler",
      ...base,
      algorithm_type: "sde-dpmsolver++",
      solver_type: "heun",
    },
    stochastic: true,
    steps: 50,
  },
  {
    name: "DPM-Solver 2M (noise prediction), ending at σ_min",
    config: {
      _class_name: "DPMSolverMultistepScheduler",
      ...base,
      algorithm_type: "dpmsolver",
      final_sigmas_type: "sigma_min",
    },
    stochastic: false,
    steps: 30,
    endsAbove0: true,
  },
  { name: "Euler", config: { _class_name: "EulerDiscreteScheduler", ...base }, stochastic: false, steps: 50 },
  {
    name: "Euler Karras, v-prediction",
    config: {
      _class_name: "EulerDiscreteScheduler",
      ...base,
      use_karras_sigmas: true,
      prediction_type: "v_prediction",
    },
    stochastic: false,
    steps: 50,
  },
  {
    name: "Euler ancestral",
    config: { _class_name: "EulerAncestralDiscreteScheduler", ...base },
    stochastic: true,
    steps: 50,
  },
  { name: "Heun", config: { _class_name: "HeunDiscreteScheduler", ...base }, stochastic: false, steps: 30 },
  {
    name: "flow-match Euler",
    config: { _class_name: "FlowMatchEulerDiscreteScheduler", shift: 3 },
    stochastic: false,
    steps: 50,
  },
  { name: "LCM", config: { _class_name: "LCMScheduler" }, stochastic: true, steps: 4 },
];

/** A network that knows the data: x0 ~ N(mu, s²) per element (s = 0: a point mass). */
function exactNetwork(s: Scheduler, mu: number, s2: number) {
  const c = s.config;
  const T = c.numTrainTimesteps;
  const table = s.alphasCumprod ? karrasSigmasFromAlphaBar(s.alphasCumprod) : null;
  const prediction = c.className === "FlowMatchEulerDiscreteScheduler" ? "flow" : c.predictionType;
  return (x: HostTensor, t: number): HostTensor => {
    let alpha: number;
    let sigma: number;
    if (table) {
      const sig = timestepToSigma(t, table);
      alpha = 1 / Math.sqrt(1 + sig * sig);
      sigma = sig * alpha;
    } else {
      sigma = t / T;
      alpha = 1 - sigma;
    }
    const gain = (alpha * s2) / (alpha * alpha * s2 + sigma * sigma);
    const data = (x.data as Float32Array).map((xi) => {
      const x0 = mu + gain * (xi - alpha * mu);
      const eps = (xi - alpha * x0) / sigma;
      if (prediction === "epsilon") return eps;
      if (prediction === "sample") return x0;
      if (prediction === "v_prediction") return alpha * eps - sigma * x0;
      return eps - x0;
    });
    return new HostTensor(data, x.shape);
  };
}

function stats(x: Float32Array): { mean: number; std: number } {
  let m = 0;
  for (const v of x) m += v;
  m /= x.length;
  let v2 = 0;
  for (const v of x) v2 += (v - m) ** 2;
  return { mean: m, std: Math.sqrt(v2 / (x.length - 1)) };
}

const shape = [2, 4, 8, 8];
const xT = new HostTensor(new Rng(11).normal(2 * 4 * 8 * 8), shape);

for (const k of CASES) {
  describe(`sampler contract: ${k.name}`, () => {
    const s = Scheduler.fromConfig(k.config);

    test("keeps the shape and returns float32", async () => {
      const x = await s.sample(exactNetwork(s, 0.7, 0.25), xT, { steps: k.steps, seed: 1 });
      assert.deepEqual(x.shape, shape);
      assert.equal(x.dtype, "float32");
      assert.ok(x.data.every(Number.isFinite));
    });

    test("is deterministic under a seed", async () => {
      const net = exactNetwork(s, 0.2, 0.5);
      const a = await s.sample(net, xT, { steps: k.steps, seed: 5 });
      const b = await s.sample(net, xT, { steps: k.steps, seed: 5 });
      assert.deepEqual(a.data, b.data);
      const c = await s.sample(net, xT, { steps: k.steps, seed: 6 });
      if (k.stochastic) assert.notDeepEqual(a.data, c.data);
      else assert.deepEqual(a.data, c.data);
    });

    test(k.endsAbove0 ? "ends near σ = 0, on σ_min" : "ends on σ = 0: the last step returns x̂0", async () => {
      const plan = s.plan(k.steps);
      if ("ladder" in plan) assert.equal(plan.ladder[plan.ladder.length - 1]!.sigma === 0, !k.endsAbove0);
      else
        assert.equal(
          plan.steps[plan.steps.length - 1]!.alphaBarPrev,
          plan.sampler === "lcm" ? plan.steps.at(-1)!.alphaBar : 1,
        );
      const seen: StepInfo[] = [];
      const x = await s.sample(exactNetwork(s, 0.2, 0.5), xT, {
        steps: k.steps,
        onStep: (i) => void seen.push(i),
      });
      const last = seen[seen.length - 1]!;
      assert.equal(last.x, x);
      const tol = k.endsAbove0 ? 0.1 : 1e-5;
      assert.ok(relError(x.data, last.x0.data) <= tol, `final x vs x̂0: ${relError(x.data, last.x0.data)}`);
    });

    test("recovers a point mass exactly", async () => {
      const x = await s.sample(exactNetwork(s, 0.7, 0), xT, { steps: k.steps, seed: 3 });
      for (const v of x.data) assert.ok(Math.abs(v - 0.7) < (k.endsAbove0 ? 0.1 : 1e-4), `got ${v}`);
    });

    if (k.name !== "LCM") {
      test("samples a Gaussian N(0.3, 0.5²) it knows exactly", async () => {
        const big = new HostTensor(new Rng(21).normal(2048), [1, 1, 32, 64]);
        // Ancestral samplers with few steps undershoot the variance (x̂0's own uncertainty is dropped).
        const steps = k.stochastic ? 250 : k.steps;
        const x = await s.sample(exactNetwork(s, 0.3, 0.25), big, { steps, seed: 4 });
        const { mean, std } = stats(x.data);
        assert.ok(Math.abs(mean - 0.3) < 0.04, `mean ${mean}`);
        assert.ok(Math.abs(std - 0.5) < 0.04, `std ${std}`);
      });
    }
  });
}
