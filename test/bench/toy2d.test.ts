import assert from "node:assert/strict";
import { test } from "node:test";
import {
  EPS_SCHEDULE,
  type MlpConfig,
  meanLoss,
  sampleDataset,
  slicedWasserstein,
  ToyNetwork,
  type Trained,
  trainDenoiser,
  untrainedDenoiser,
} from "../../bench/toy2d-lib.ts";
import { Scheduler } from "../../src/samplers/index.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import { Rng } from "../../src/tensor/rng.ts";

const N = 1000;
const MLP: MlpConfig = { hidden: 64, layers: 2, timeDim: 32, fourier: 4, maxFreq: 6 };

async function ddimSamples(model: Trained, xT: HostTensor): Promise<Float32Array> {
  const net = await ToyNetwork.create(model, N);
  try {
    const s = Scheduler.fromConfig({ _class_name: "DDIMScheduler", ...EPS_SCHEDULE, clip_sample: false });
    return (await s.sample(net.forward, xT, { steps: 20, seed: 1 })).data;
  } finally {
    net.dispose();
  }
}

test("sliced Wasserstein: zero for one set, symmetric, grows with a shift", () => {
  const a = sampleDataset("moons", 500, new Rng(1));
  const b = sampleDataset("moons", 500, new Rng(2));
  assert.equal(slicedWasserstein(a, a), 0);
  assert.ok(Math.abs(slicedWasserstein(a, b) - slicedWasserstein(b, a)) < 1e-12);
  // shifting every point by (d, 0) moves each projection by d·cos θ: SW₁ = d·E|cos θ| = 2d/π
  const shifted = a.map((v, i) => (i % 2 === 0 ? v + 1 : v));
  assert.ok(Math.abs(slicedWasserstein(a, shifted) - 2 / Math.PI) < 1e-3);
  // sizes may differ: a set repeated twice is the same measure
  const twice = new Float32Array([...a, ...a]);
  assert.ok(slicedWasserstein(a, twice) < 1e-12);
  assert.ok(Math.abs(slicedWasserstein(b, twice) - slicedWasserstein(b, a)) < 1e-12);
  // one point at 0 against two at ±1 on the x axis: W₁ of the projections is E|cos θ| = 2/π
  const one = new Float32Array([0, 0]);
  const two = new Float32Array([-1, 0, 1, 0]);
  assert.ok(Math.abs(slicedWasserstein(one, two) - 2 / Math.PI) < 1e-3);
});

test("toy 2-D: a short DDIM run of a trained MLP lands near 8 Gaussians", async () => {
  const rng = new Rng(0);
  const heldOut = sampleDataset("8gaussians", N, rng.fold("held-out"));
  const data = sampleDataset("8gaussians", 20_000, rng.fold("train"));
  const xT = new HostTensor(rng.fold("xT").normal(2 * N), [N, 2]);
  const model = await trainDenoiser({
    objective: "epsilon",
    data,
    steps: 300,
    batch: 256,
    lr: 3e-3,
    mlp: MLP,
  });
  const first = meanLoss(model.losses, 0, 20);
  const last = meanLoss(model.losses, 280, 300);
  assert.ok(last < 0.6 * first, `loss ${first.toFixed(3)} → ${last.toFixed(3)}`);

  const trained = slicedWasserstein(await ddimSamples(model, xT), heldOut);
  const untrained = slicedWasserstein(await ddimSamples(untrainedDenoiser("epsilon", MLP), xT), heldOut);
  const gaussian = slicedWasserstein(rng.fold("gaussian").normal(2 * N), heldOut);
  assert.ok(
    trained < untrained / 5 && trained < gaussian / 2,
    `SW₁ trained ${trained.toFixed(3)}, untrained ${untrained.toFixed(3)}, N(0, I) ${gaussian.toFixed(3)}`,
  );
});
