import assert from "node:assert/strict";
import { test } from "node:test";
import type { F32 } from "../../src/diffusion/float32.ts";
import {
  denoiser,
  estimate,
  flowLevel,
  type NoiseLevel,
  type Prediction,
  preconditioning,
  target,
  veLevel,
  vpLevel,
  vpLevelFromSigma,
} from "../../src/diffusion/parameterization.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import { Rng } from "../../src/tensor/rng.ts";
import { relError } from "../samplers/fixtures.ts";

const rng = new Rng(3);
const x0 = new HostTensor(rng.normal(64), [2, 2, 4, 4]) as F32;
const eps = new HostTensor(rng.normal(64), [2, 2, 4, 4]) as F32;
const PREDICTIONS: Prediction[] = ["epsilon", "x0", "v", "flow"];
const LEVELS: [string, NoiseLevel][] = [
  ["vp", vpLevel(0.3, 500)],
  ["vp from σ", vpLevelFromSigma(2.5, 700)],
  ["ve", veLevel(3.7, 800)],
  ["flow", flowLevel(0.35, 350)],
  ["general", { alpha: 0.8, sigma: 1.9, t: 10 }],
];

function noisy(level: NoiseLevel): F32 {
  return new HostTensor(
    x0.data.map((v, i) => level.alpha * v + level.sigma * eps.data[i]!),
    x0.shape,
  ) as F32;
}

test("every prediction converts both ways: target(x0, ε) → estimate → (x0, ε), on every path", () => {
  for (const prediction of PREDICTIONS) {
    for (const [name, level] of LEVELS) {
      const x = noisy(level);
      const out = target(prediction, x0, eps, level);
      const back = estimate(prediction, out, x, level);
      const what = `${prediction} on ${name}`;
      assert.ok(relError(back.x0.data, x0.data) < 1e-5, `${what}: x0 ${relError(back.x0.data, x0.data)}`);
      assert.ok(
        relError(back.eps.data, eps.data) < 1e-5,
        `${what}: eps ${relError(back.eps.data, eps.data)}`,
      );
    }
  }
});

test("the targets are the textbook ones: v = αε − σx0 (VP), u = ε − x0", () => {
  const level = vpLevel(0.64, 1);
  const v = target("v", x0, eps, level);
  for (let i = 0; i < 8; i++)
    assert.ok(Math.abs(v.data[i]! - (0.8 * eps.data[i]! - 0.6 * x0.data[i]!)) < 1e-6);
  const u = target("flow", x0, eps, flowLevel(0.4, 400));
  for (let i = 0; i < 8; i++) assert.ok(Math.abs(u.data[i]! - (eps.data[i]! - x0.data[i]!)) < 1e-6);
});

test("EDM preconditioning: D(x; σ) = c_skip·x + c_out·F(c_in·x) is the x̂0 of every prediction type", () => {
  for (const sigma of [0.05, 1, 14.6]) {
    const level = veLevel(sigma, 0);
    const x = noisy(level);
    for (const prediction of PREDICTIONS) {
      const { cSkip, cOut, cIn } = preconditioning(prediction, sigma);
      // The network sees c_in·x on its own path; its output there is the target at that native level.
      const native: NoiseLevel = { alpha: cIn, sigma: sigma * cIn, t: 0 };
      const F = target(prediction, x0, eps, native);
      const D = x.data.map((xi, i) => cSkip * xi + cOut * F.data[i]!);
      assert.ok(relError(D, x0.data) < 1e-5, `${prediction} σ=${sigma}: ${relError(D, x0.data)}`);
    }
  }
});

test("denoiser() scales x onto the network's path and passes native paths through untouched", async () => {
  const seen: number[] = [];
  const net = (x: HostTensor, t: number) => {
    seen.push((x.data as Float32Array)[0]!, t);
    return HostTensor.zeros(x.shape);
  };
  const one = HostTensor.full([1, 1, 1, 1], 2);
  await denoiser(net, "epsilon")(one, vpLevel(0.5, 7));
  await denoiser(net, "epsilon")(one, veLevel(3, 8));
  await denoiser(net, "flow")(one, flowLevel(0.25, 250));
  await denoiser(net, "flow")(one, veLevel(3, 9));
  assert.deepEqual(seen, [2, 7, Math.fround(2 / Math.fround(Math.sqrt(10))), 8, 2, 250, 0.5, 9]);
});

test("a network with learned variance has its extra channels split off", async () => {
  const net = (x: HostTensor) => {
    const [n = 1, c = 1, ...rest] = x.shape;
    const out = new Float32Array(x.size * 2);
    for (let i = 0; i < out.length; i++) out[i] = Math.floor(i / (x.size / n / c)) % (2 * c) < c ? 0 : 5;
    return new HostTensor(out, [n, 2 * c, ...rest]);
  };
  const d = await denoiser(net, "epsilon", { learnedVariance: true })(
    HostTensor.zeros([2, 3, 2, 2]),
    vpLevel(0.5, 1),
  );
  assert.deepEqual(d.variance?.shape, [2, 3, 2, 2]);
  assert.ok(d.variance?.data.every((v) => v === 5));
  assert.ok(d.eps.data.every((v) => v === 0));
  await assert.rejects(
    denoiser(net, "epsilon")(HostTensor.zeros([2, 3, 2, 2]), vpLevel(0.5, 1)),
    /network output has shape \[2, 6, 2, 2\] but its input has \[2, 3, 2, 2\]/,
  );
});
