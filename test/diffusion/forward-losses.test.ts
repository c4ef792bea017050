import assert from "node:assert/strict";
import { test } from "node:test";
import type { F32 } from "../../src/diffusion/float32.ts";
import { addFlowNoise, addNoise, flowVelocity, velocity } from "../../src/diffusion/forward.ts";
import {
  conditionDropout,
  lossTarget,
  lossWeight,
  lossWeights,
  sampleFlowTimes,
  sampleLogNormalSigmas,
  sampleTimesteps,
} from "../../src/diffusion/losses.ts";
import { flowLevel, vpLevel } from "../../src/diffusion/parameterization.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import { Rng } from "../../src/tensor/rng.ts";

const rng = new Rng(9);
const x0 = new HostTensor(rng.normal(2 * 500), [2, 500]) as F32;
const eps = new HostTensor(rng.normal(2 * 500), [2, 500]) as F32;

test("addNoise is q(x_t | x0) in closed form, per sample; velocity and flow targets invert it", () => {
  const abar = [0.9, 0.1];
  const xt = addNoise(x0, eps, abar);
  for (const [b, a] of abar.entries()) {
    for (let i = b * 500; i < b * 500 + 5; i++) {
      assert.ok(
        Math.abs(xt.data[i]! - (Math.sqrt(a) * x0.data[i]! + Math.sqrt(1 - a) * eps.data[i]!)) < 1e-5,
      );
    }
  }
  // x0 = √ᾱ·x_t − √(1−ᾱ)·v.
  const v = velocity(x0, eps, abar);
  for (const [b, a] of abar.entries()) {
    const i = b * 500 + 3;
    assert.ok(Math.abs(Math.sqrt(a) * xt.data[i]! - Math.sqrt(1 - a) * v.data[i]! - x0.data[i]!) < 1e-5);
  }
  assert.deepEqual(velocity(x0, eps, 0.3).data, lossTarget("v", x0, eps, vpLevel(0.3, 0)).data);
  const xs = addFlowNoise(x0, eps, 0.25);
  assert.ok(Math.abs(xs.data[0]! - (0.75 * x0.data[0]! + 0.25 * eps.data[0]!)) < 1e-6);
  assert.deepEqual(flowVelocity(x0, eps).data, lossTarget("flow", x0, eps, flowLevel(0.25, 250)).data);
  assert.throws(() => addNoise(x0, eps, [0.5]), /got 1 values for a batch of 2/);
});

test("loss weights: uniform, min-SNR-γ (Hang et al.) and EDM, converted to each target's error scale", () => {
  assert.equal(lossWeight({ kind: "uniform" }, "v", 3), 1);
  const g = { kind: "min-snr", gamma: 5 } as const;
  assert.equal(lossWeight(g, "epsilon", 2), 1);
  assert.equal(lossWeight(g, "epsilon", 20), 5 / 20);
  assert.equal(lossWeight(g, "epsilon", 0), 1);
  assert.equal(lossWeight(g, "v", 20), 5 / 21);
  assert.equal(lossWeight(g, "x0", 20), 5);
  // The flow target's error is (1 + √SNR)² times the x0 error.
  assert.ok(Math.abs(lossWeight(g, "flow", 4) - 4 / 9) < 1e-15);
  // EDM: λ(σ) = (σ² + σd²)/(σ σd)² on the x0 error; σ² = 1/SNR.
  const sigma = 0.8;
  const s = 1 / (sigma * sigma);
  const lambda = (sigma * sigma + 0.25) / (sigma * 0.5) ** 2;
  assert.ok(Math.abs(lossWeight({ kind: "edm" }, "x0", s) - lambda) < 1e-12);
  assert.ok(Math.abs(lossWeight({ kind: "edm" }, "epsilon", s) - lambda / s) < 1e-12);
  assert.deepEqual(lossWeights(g, "x0", [1, 10]), [1, 5]);
  assert.throws(() => lossWeight({ kind: "min-snr", gamma: 0 }, "v", 1), /gamma > 0/);
});

test("timestep sampling: uniform integers, EDM log-normal σ, flow times in (0, 1); condition dropout at rate p", () => {
  const r = new Rng(1);
  const t = sampleTimesteps(r, 20000, 1000);
  assert.ok(t.every((v) => Number.isInteger(v) && v >= 0 && v < 1000));
  const mean = t.reduce((a, b) => a + b, 0) / t.length;
  assert.ok(Math.abs(mean - 499.5) < 10);
  const logs = sampleLogNormalSigmas(r, 20000).map(Math.log);
  const m = logs.reduce((a, b) => a + b, 0) / logs.length;
  const sd = Math.sqrt(logs.reduce((a, b) => a + (b - m) ** 2, 0) / logs.length);
  assert.ok(Math.abs(m + 1.2) < 0.05 && Math.abs(sd - 1.2) < 0.05, `${m} ${sd}`);
  const ln = { kind: "logit-normal", mean: 0, std: 1 } as const;
  for (const kind of [{ kind: "uniform" } as const, ln]) {
    assert.ok(sampleFlowTimes(r, 1000, kind).every((v) => v > 0 && v < 1));
  }
  // logit-normal: logit(s) ~ N(mean, std²), so the median is sigmoid(mean) and the ends are rare
  const s = sampleFlowTimes(r, 20000, { kind: "logit-normal", mean: 0.5, std: 0.8 });
  const logits = s.map((v) => Math.log(v / (1 - v)));
  const lm = logits.reduce((a, b) => a + b, 0) / logits.length;
  const ls = Math.sqrt(logits.reduce((a, b) => a + (b - lm) ** 2, 0) / logits.length);
  assert.ok(Math.abs(lm - 0.5) < 0.03 && Math.abs(ls - 0.8) < 0.03, `${lm} ${ls}`);
  const td = sampleTimesteps(r, 20000, 1000, ln);
  assert.ok(td.every((v) => Number.isInteger(v) && v >= 0 && v < 1000));
  const tails = td.filter((v) => v < 100 || v >= 900).length / td.length;
  const middle = td.filter((v) => v >= 450 && v < 550).length / td.length;
  // P(|z| > logit(0.9) = 2.197) = 2.8%; P(|z| < logit(0.55) = 0.2007) = 15.9%
  assert.ok(Math.abs(tails - 0.028) < 0.006 && Math.abs(middle - 0.159) < 0.01, `${tails} ${middle}`);
  assert.throws(() => sampleTimesteps(r, 1, 1000, { kind: "logit-normal", mean: 0, std: 0 }), /std > 0/);
  const drop = conditionDropout(r, 20000, 0.1);
  const rate = drop.filter(Boolean).length / drop.length;
  assert.ok(Math.abs(rate - 0.1) < 0.01);
  assert.ok(conditionDropout(r, 10, 0).every((d) => !d));
  assert.ok(conditionDropout(r, 10, 1).every((d) => d));
  assert.throws(() => conditionDropout(r, 1, 1.5), /probability must be in \[0, 1\]/);
  assert.deepEqual(sampleTimesteps(new Rng(4), 5, 1000), sampleTimesteps(new Rng(4), 5, 1000));
});
