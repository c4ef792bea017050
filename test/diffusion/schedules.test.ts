import assert from "node:assert/strict";
import { test } from "node:test";
import { betaQuantile } from "../../src/diffusion/beta-quantile.ts";
import {
  betaSigmas,
  exponentialSigmas,
  karrasSigmas,
  shiftSigmas,
  sigmaToTimestep,
  timestepToSigma,
} from "../../src/diffusion/ladders.ts";
import {
  alphasCumprod,
  betaSchedule,
  karrasSigmasFromAlphaBar,
  noiseSchedule,
  rescaleZeroTerminalSnr,
  snr,
  torchLinspace32,
} from "../../src/diffusion/schedules.ts";
import { arange, roundHalfEven, spacedTimesteps } from "../../src/diffusion/spacing.ts";

const T = 1000;

test("linear schedules run from beta_start to beta_end; ᾱ decreases; SNR = ᾱ/(1 − ᾱ)", () => {
  const b = betaSchedule({ kind: "linear", numTrainTimesteps: T, betaStart: 1e-4, betaEnd: 0.02 });
  assert.equal(b[0], Math.fround(1e-4));
  assert.equal(b[T - 1], Math.fround(0.02));
  assert.deepEqual(torchLinspace32(0, 1, 5), Float32Array.of(0, 0.25, 0.5, 0.75, 1));
  const ac = alphasCumprod(b);
  for (let i = 1; i < T; i++) assert.ok(ac[i]! < ac[i - 1]!);
  assert.equal(snr(0.5), 1);
  const sl = betaSchedule({
    kind: "scaled_linear",
    numTrainTimesteps: T,
    betaStart: 0.00085,
    betaEnd: 0.012,
  });
  assert.ok(Math.abs(sl[T - 1]! - 0.012) < 1e-8 && Math.abs(sl[0]! - 0.00085) < 1e-9);
});

test("the cosine schedule (Nichol & Dhariwal) caps β at 0.999; sigmoid and exp schedules are increasing", () => {
  const b = betaSchedule({ kind: "squaredcos_cap_v2", numTrainTimesteps: T, betaStart: 0, betaEnd: 0 });
  assert.equal(b[T - 1], Math.fround(0.999));
  for (const kind of ["sigmoid", "exp"] as const) {
    const s = betaSchedule({ kind, numTrainTimesteps: 100, betaStart: 1e-4, betaEnd: 0.02 });
    for (let i = 1; i < 100; i++) assert.ok(s[i]! >= s[i - 1]!, `${kind} at ${i}`);
  }
});

test("zero-terminal-SNR rescaling (Lin et al. 2023) makes ᾱ_T = 0 and keeps ᾱ_0", () => {
  const b = betaSchedule({ kind: "scaled_linear", numTrainTimesteps: T, betaStart: 0.00085, betaEnd: 0.012 });
  const r = rescaleZeroTerminalSnr(b);
  const before = alphasCumprod(b);
  const after = alphasCumprod(r);
  assert.equal(after[T - 1], 0);
  assert.equal(r[T - 1], 1);
  assert.ok(Math.abs(after[0]! - before[0]!) < 1e-6);
  const s = noiseSchedule({
    kind: "linear",
    numTrainTimesteps: 10,
    betaStart: 0.1,
    betaEnd: 0.2,
    trainedBetas: [0.5, 0.5],
  });
  assert.deepEqual([...s.alphasCumprod], [0.5, 0.25]);
});

test("timestep spacing: linspace rounds half to even, leading adds steps_offset, trailing starts at T − 1", () => {
  const lin = spacedTimesteps("linspace", { numTrainTimesteps: T, steps: 25 });
  assert.ok(lin.includes(166) && lin.includes(832));
  assert.equal(lin[0], 999);
  assert.deepEqual(
    spacedTimesteps("leading", { numTrainTimesteps: T, steps: 10, stepsOffset: 1 }),
    [901, 801, 701, 601, 501, 401, 301, 201, 101, 1],
  );
  assert.deepEqual(
    spacedTimesteps("trailing", { numTrainTimesteps: T, steps: 10 }),
    [999, 899, 799, 699, 599, 499, 399, 299, 199, 99],
  );
  assert.deepEqual(
    [roundHalfEven(0.5), roundHalfEven(1.5), roundHalfEven(2.5), roundHalfEven(-2.5)],
    [0, 2, 2, -2],
  );
  assert.equal(arange(1000, 0, -1000 / 3).length, 3);
  assert.throws(() => spacedTimesteps("leading", { numTrainTimesteps: 10, steps: 11 }), /cannot exceed/);
});

test("sigma ladders: Karras, exponential and beta run from σ_max to σ_min; the flow shift fixes 0 and 1", () => {
  for (const ladder of [
    karrasSigmas(10, 0.03, 14.6),
    exponentialSigmas(10, 0.03, 14.6),
    betaSigmas(10, 0.03, 14.6),
  ]) {
    assert.ok(Math.abs(ladder[0]! - 14.6) < 1e-9 && Math.abs(ladder[9]! - 0.03) < 1e-9);
    for (let i = 1; i < 10; i++) assert.ok(ladder[i]! < ladder[i - 1]!);
  }
  const k = karrasSigmas(3, 1, 128, 7);
  assert.ok(Math.abs(k[1]! - ((1 + 2) / 2) ** 7) < 1e-9);
  const e = exponentialSigmas(3, 1, 100);
  assert.ok(Math.abs(e[1]! - 10) < 1e-12);
  assert.deepEqual(shiftSigmas([0, 1], 3), [0, 1]);
  assert.ok(Math.abs(shiftSigmas([0.5], 3)[0]! - 0.75) < 1e-15);
  // scipy.stats.beta.ppf(0.25, 0.6, 0.6)
  assert.ok(Math.abs(betaQuantile(0.25, 0.6, 0.6) - 0.17568037865269498) < 1e-14);
});

test("σ ↔ timestep: interpolation in log σ inverts the table at integer timesteps", () => {
  const ac = alphasCumprod(
    betaSchedule({ kind: "linear", numTrainTimesteps: T, betaStart: 1e-4, betaEnd: 0.02 }),
  );
  const sigmas = karrasSigmasFromAlphaBar(ac);
  const logs = Array.from(sigmas, Math.log);
  for (const t of [0, 1, 250, 998, 999])
    assert.ok(Math.abs(sigmaToTimestep(sigmas[t]!, logs) - t) < 1e-9, `t=${t}`);
  assert.equal(timestepToSigma(10.5, sigmas), (sigmas[10]! + sigmas[11]!) / 2);
  const mid = sigmaToTimestep(Math.sqrt(sigmas[10]! * sigmas[11]!), logs);
  assert.ok(Math.abs(mid - 10.5) < 1e-9);
});
