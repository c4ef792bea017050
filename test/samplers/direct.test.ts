// The sampler functions on their own: a hand-built ladder, one denoiser, no Scheduler, no hidden state.
import assert from "node:assert/strict";
import { test } from "node:test";
import { type F32, map } from "../../src/diffusion/float32.ts";
import { karrasSigmas } from "../../src/diffusion/ladders.ts";
import { type Denoiser, denoiser } from "../../src/diffusion/parameterization.ts";
import { ddim } from "../../src/samplers/ddim.ts";
import { dpmSolverPP2M, sdeDpmSolverPP2M } from "../../src/samplers/dpm-solver.ts";
import { euler } from "../../src/samplers/euler.ts";
import { eulerAncestral } from "../../src/samplers/euler-ancestral.ts";
import { flowMatchEuler } from "../../src/samplers/flow-match-euler.ts";
import { heun } from "../../src/samplers/heun.ts";
import { gaussianNoise, type SigmaLevel } from "../../src/samplers/types.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import { Rng } from "../../src/tensor/rng.ts";

// An ε network for data that is always 0.5, conditioned directly on the VE noise level (t = σ).
const net = (x: HostTensor, sigma: number) => {
  const alpha = 1 / Math.sqrt(1 + sigma * sigma);
  return new HostTensor(
    (x.data as Float32Array).map((v) => (v - alpha * 0.5) / (sigma * alpha)),
    x.shape,
  );
};
const d: Denoiser = denoiser(net, "epsilon");
const ladder: SigmaLevel[] = [
  ...karrasSigmas(12, 0.02, 80).map((s) => ({ sigma: s, t: s })),
  { sigma: 0, t: 0 },
];
const start = () =>
  new HostTensor(
    new Rng(3).normal(64).map((v) => v * 80),
    [1, 1, 8, 8],
  ) as F32;

test("Euler, Heun, Euler ancestral and DPM-Solver++ (2M, SDE 2M) run on a hand-built Karras ladder", async () => {
  const runs = [
    euler(d, start(), ladder),
    heun(d, start(), ladder),
    eulerAncestral(d, start(), ladder, { noise: gaussianNoise(1) }),
    // DPM-Solver works on the VP path: x_vp = x_ve / √(1 + σ²).
    dpmSolverPP2M(
      d,
      map(start(), (v) => v / Math.sqrt(1 + 80 * 80)),
      ladder,
    ),
    sdeDpmSolverPP2M(
      d,
      map(start(), (v) => v / Math.sqrt(1 + 80 * 80)),
      ladder,
      {
        noise: gaussianNoise(2),
      },
    ),
  ];
  for (const x of await Promise.all(runs))
    for (const v of x.data) assert.ok(Math.abs(v - 0.5) < 1e-4, `${v}`);
});

test("concurrent runs share nothing: the same inputs give the same outputs", async () => {
  const [a, b] = await Promise.all([
    eulerAncestral(d, start(), ladder, { noise: gaussianNoise(7) }),
    eulerAncestral(d, start(), ladder, { noise: gaussianNoise(7) }),
  ]);
  assert.deepEqual(a.data, b.data);
});

test("DDIM steps between any ᾱ, and flow-matching Euler walks a flow ladder", async () => {
  const vpNet = (x: HostTensor, t: number) => {
    const abar = 1 - t / 1000;
    return new HostTensor(
      (x.data as Float32Array).map((v) => (v - Math.sqrt(abar) * 0.5) / Math.sqrt(1 - abar)),
      x.shape,
    );
  };
  const steps = [900, 600, 300, 1].map((t, i, all) => ({
    t,
    alphaBar: 1 - t / 1000,
    alphaBarPrev: i < 3 ? 1 - all[i + 1]! / 1000 : 1,
  }));
  const x = await ddim(denoiser(vpNet, "epsilon"), start(), steps);
  for (const v of x.data) assert.ok(Math.abs(v - 0.5) < 1e-4, `${v}`);
  const flowNet = (x: HostTensor, t: number) => {
    const s = t / 1000;
    // u = ε − x0 with x = (1 − s)·0.5 + s·ε.
    return new HostTensor(
      (x.data as Float32Array).map((v) => (v - (1 - s) * 0.5) / s - 0.5),
      x.shape,
    );
  };
  const flowLadder = [1, 0.75, 0.5, 0.25, 0].map((s) => ({ sigma: s, t: s * 1000 }));
  const y = await flowMatchEuler(denoiser(flowNet, "flow"), start(), flowLadder);
  for (const v of y.data) assert.ok(Math.abs(v - 0.5) < 1e-4, `${v}`);
});

test("stochastic samplers and churn demand a noise source", async () => {
  await assert.rejects(
    euler(d, start(), ladder, { churn: { sChurn: 1 } }),
    /churn adds noise; pass options.noise/,
  );
  await assert.rejects(
    ddim(d, start(), [{ t: 1, alphaBar: 0.5, alphaBarPrev: 1 }], { eta: 1 }),
    /pass options.noise/,
  );
  const churned = await euler(d, start(), ladder, {
    churn: { sChurn: 5, timestep: (s) => s },
    noise: gaussianNoise(3),
  });
  for (const v of churned.data) assert.ok(Math.abs(v - 0.5) < 1e-4, `${v}`);
});
