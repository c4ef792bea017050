/**
 * The consistency distillation loss (src/train/lcm.ts) against a hand computation in float64 on toy
 * networks, its gradient against finite differences of that computation, the boundary condition,
 * and the solver grid against LCMScheduler's.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { resolveDenoiser } from "../../src/models/registry.ts";
import { compileGraph } from "../../src/runtime/compile.ts";
import { lcmScalings } from "../../src/samplers/lcm.ts";
import { Scheduler } from "../../src/samplers/scheduler.ts";
import { grad } from "../../src/tensor/autodiff.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import * as o from "../../src/tensor/ops.ts";
import { Rng } from "../../src/tensor/rng.ts";
import { Graph, type Tensor } from "../../src/tensor/symbolic.ts";
import {
  estimateCoefficients,
  LCM_DEFAULTS,
  type LcmSettings,
  lcmBatchSpecs,
  lcmFeeds,
  lcmPlan,
  lcmSample,
  lcmScalars,
  solverTimesteps,
} from "../../src/train/lcm.ts";
import { type LcmNetworks, lcmLossOf, lcmSolverStep, lcmTarget } from "../../src/train/lcm-loss.ts";
import { TINY_UNET_ATTN } from "../support/tiny-models.ts";

const T = 1000;
const ddpm = Scheduler.fromConfig({
  _class_name: "DDPMScheduler",
  num_train_timesteps: T,
  beta_schedule: "linear",
});
const ac = ddpm.alphasCumprod!;
// a class-conditional model for the conditioning plumbing (3 classes, null label 3); the networks are toys
const bound = resolveDenoiser(TINY_UNET_ATTN);
const [B, C, H] = [4, 1, 2];

/** Toy networks F(x, t, label): student θ·x + 0.3·label, teacher 0.7·x + 1e-4·t + 0.2·label, target φ·x + 0.3·label. */
const toy = {
  student: (theta: number, x: number, _t: number, y: number) => theta * x + 0.3 * y,
  teacher: (x: number, t: number, y: number) => 0.7 * x + 1e-4 * t + 0.2 * y,
  target: (phi: number, x: number, _t: number, y: number) => phi * x + 0.3 * y,
};

/** The loss by hand, in float64, for v-prediction: every formula written out from the paper. */
function handLoss(
  theta: number,
  phi: number,
  x0: Float32Array,
  noise: Float32Array,
  idx: number[],
  labels: number[],
  s: LcmSettings,
  nullLabel: number,
): number {
  const grid = Array.from({ length: s.solverSteps }, (_, n) => (n + 1) * Math.floor(T / s.solverSteps) - 1);
  const scal = (t: number) => {
    const k = s.timestepScaling * t;
    return { skip: 0.25 / (k * k + 0.25), out: k / Math.sqrt(k * k + 0.25) };
  };
  const per = x0.length / idx.length;
  let sum = 0;
  for (let i = 0; i < x0.length; i++) {
    const b = Math.floor(i / per);
    const n = idx[b]!;
    const y = labels[b]!;
    const ts = grid[n]!;
    const te = n > 0 ? grid[n - 1]! : 0;
    const [a1, s1] = [Math.sqrt(ac[ts]!), Math.sqrt(1 - ac[ts]!)];
    const [a0, s0] = [Math.sqrt(ac[te]!), Math.sqrt(1 - ac[te]!)];
    const x = a1 * x0[i]! + s1 * noise[i]!;
    // v-prediction: x̂0 = αx − σv, ε̂ = αv + σx
    const v = toy.student(theta, x, ts, y);
    const pred = scal(ts).skip * x + scal(ts).out * (a1 * x - s1 * v);
    const vu = toy.teacher(x, ts, nullLabel);
    const vc = toy.teacher(x, ts, y);
    const vg = vu + s.guidance * (vc - vu);
    const xn = a0 * (a1 * x - s1 * vg) + s0 * (a1 * vg + s1 * x);
    const vt = toy.target(phi, xn, te, y);
    const target = scal(te).skip * xn + scal(te).out * (a0 * xn - s0 * vt);
    const d = pred - target;
    sum += s.distance === "l2" ? d * d : Math.sqrt(d * d + s.huberC ** 2) - s.huberC;
  }
  return sum / x0.length;
}

/** The loss graph over the toy networks; returns the loss and dloss/dθ. */
async function graphLoss(
  settings: LcmSettings,
  theta: number,
  phi: number,
  feeds: Record<string, HostTensor>,
): Promise<{ loss: number; dtheta: number }> {
  const plan = lcmPlan(bound, "v", ac, settings);
  const g = new Graph();
  const b: Record<string, Tensor> = {};
  for (const [k, s] of Object.entries(lcmBatchSpecs(plan, B, H)))
    b[k] = g.input(k, s.shape, s.dtype ?? "float32");
  const th = g.input("theta", []);
  const ph = g.input("phi", []);
  const label = (c: Readonly<Record<string, Tensor>>, n: number) =>
    o.reshape(o.cast(c["class_labels"]!, "float32"), [n, 1, 1, 1]);
  const tcol = (t: Tensor, n: number) => o.reshape(t, [n, 1, 1, 1]);
  const nets: LcmNetworks = {
    student: (x, _t, c) => o.add(o.mul(th, x), o.mul(label(c, x.shape[0]!), 0.3)),
    teacher: (x, t, c) =>
      o.add(o.add(o.mul(x, 0.7), o.mul(tcol(t, x.shape[0]!), 1e-4)), o.mul(label(c, x.shape[0]!), 0.2)),
    target: (x, _t, c) => o.add(o.mul(ph, x), o.mul(label(c, x.shape[0]!), 0.3)),
  };
  const loss = lcmLossOf(nets, b, settings);
  const [dth] = grad(loss, [th]);
  const compiled = await compileGraph(g, { loss, dtheta: dth! });
  try {
    const out = await compiled.run({
      ...feeds,
      theta: HostTensor.scalar(theta),
      phi: HostTensor.scalar(phi),
    });
    return { loss: out["loss"]!.data[0] as number, dtheta: out["dtheta"]!.data[0] as number };
  } finally {
    compiled.dispose();
  }
}

test("the consistency loss matches a hand computation on toy networks, and its gradient reaches the student alone", async () => {
  const rng = new Rng(7);
  const x0 = new HostTensor<"float32">(rng.uniform(B * C * H * H, -1, 1), [B, C, H, H]);
  const noise = new HostTensor<"float32">(rng.normal(B * C * H * H), [B, C, H, H]);
  const idx = [0, 3, 17, 49];
  const labels = [2, 0, 1, 2];
  for (const settings of [
    LCM_DEFAULTS,
    { ...LCM_DEFAULTS, distance: "l2" as const, guidance: 3 },
    { ...LCM_DEFAULTS, guidance: 1, huberC: 0.05 },
  ]) {
    const plan = lcmPlan(bound, "v", ac, settings);
    const feeds = lcmFeeds(plan, x0, noise, idx, labels);
    const [theta, phi] = [0.4, 0.6];
    const got = await graphLoss(settings, theta, phi, feeds);
    const want = handLoss(theta, phi, x0.data, noise.data, idx, labels, settings, 3);
    const what = `${settings.distance}, guidance ${settings.guidance}`;
    assert.ok(
      Math.abs(got.loss - want) <= 1e-5 * Math.abs(want),
      `${what}: loss ${got.loss} vs ${want} by hand`,
    );
    const h = 1e-4;
    const fd =
      (handLoss(theta + h, phi, x0.data, noise.data, idx, labels, settings, 3) -
        handLoss(theta - h, phi, x0.data, noise.data, idx, labels, settings, 3)) /
      (2 * h);
    assert.ok(Math.abs(got.dtheta - fd) <= 1e-3 * Math.abs(fd) + 1e-7, `${what}: dθ ${got.dtheta} vs ${fd}`);
  }
});

test("the boundary condition: c_skip(0) = 1, c_out(0) = 0 exactly, so the target at t = 0 is x_n itself", async () => {
  assert.deepEqual(lcmScalings(0, 10), { cSkip: 1, cOut: 0 });
  const plan = lcmPlan(bound, "v", ac, LCM_DEFAULTS);
  assert.deepEqual(lcmSample(plan, 0), { start: 19, end: 0 });
  const s = lcmScalars(plan, lcmSample(plan, 0));
  assert.equal(s.skip_end, 1);
  assert.equal(s.out_end, 0);
  // away from the boundary the network counts: c_out(t_0 = 19) ≈ 1
  assert.ok(s.out_start > 0.99);
  // in the graph: a target network with huge outputs changes nothing at n = 0
  const g = new Graph();
  const b: Record<string, Tensor> = {};
  for (const [k, sp] of Object.entries(lcmBatchSpecs(plan, B, H)))
    b[k] = g.input(k, sp.shape, sp.dtype ?? "float32");
  const nets = {
    teacher: (x: Tensor) => o.mul(x, 0.5),
    target: (x: Tensor) => o.add(o.mul(x, 1e6), 123),
  };
  const xn = lcmSolverStep(nets, b, LCM_DEFAULTS.guidance);
  const f = lcmTarget(nets, b, xn);
  const compiled = await compileGraph(g, { xn, f });
  try {
    const rng = new Rng(1);
    const x0 = new HostTensor<"float32">(rng.uniform(B * C * H * H, -1, 1), [B, C, H, H]);
    const noise = new HostTensor<"float32">(rng.normal(B * C * H * H), [B, C, H, H]);
    const out = await compiled.run(lcmFeeds(plan, x0, noise, [0, 0, 0, 0], [0, 1, 2, 0]));
    assert.deepEqual(out["f"]!.data, out["xn"]!.data, "f(x, 0) = x bit for bit");
  } finally {
    compiled.dispose();
  }
});

test("the solver grid is LCMScheduler's distillation grid; x̂0/ε̂ coefficients are the samplers' own", () => {
  const grid = solverTimesteps(T, 50);
  assert.equal(grid.length, 50);
  assert.deepEqual(grid.slice(0, 3), [19, 39, 59]);
  assert.equal(grid[49], 999);
  const lcm = Scheduler.fromConfig({
    _class_name: "LCMScheduler",
    num_train_timesteps: T,
    beta_schedule: "linear",
  });
  assert.deepEqual(lcm.timesteps(50), [...grid].reverse());
  assert.deepEqual(solverTimesteps(T, 10).slice(0, 2), [99, 199]);
  assert.throws(() => solverTimesteps(T, 0), /1 to 1000 points/);
  const level = { alpha: 0.8, sigma: 0.6, t: 500 };
  const close = (a: number[], b: number[]) => a.every((v, i) => Math.abs(v - b[i]!) < 1e-6);
  const eps = estimateCoefficients("epsilon", level);
  assert.ok(close([...eps.x0, ...eps.eps], [1 / 0.8, -0.6 / 0.8, 0, 1]));
  const v = estimateCoefficients("v", level);
  assert.ok(close([...v.x0, ...v.eps], [0.8, -0.6, 0.6, 0.8]));
  const x0 = estimateCoefficients("x0", level);
  assert.ok(close([...x0.x0, ...x0.eps], [0, 1, 1 / 0.6, -0.8 / 0.6]));
});

test("a flow-matching teacher, or guidance without a null label, is refused with the fix", () => {
  assert.throws(
    () => lcmPlan(bound, "flow", null, LCM_DEFAULTS),
    /flow-matching teacher is for --method reflow/,
  );
  const uncond = resolveDenoiser({ ...TINY_UNET_ATTN, num_class_embeds: null });
  assert.throws(() => lcmPlan(uncond, "v", ac, LCM_DEFAULTS), /no class.*use guidance 1/);
  assert.doesNotThrow(() => lcmPlan(uncond, "v", ac, { ...LCM_DEFAULTS, guidance: 1 }));
});
