import assert from "node:assert/strict";
import { test } from "node:test";
import { conv2d, linear, mse, silu } from "../../src/nn/index.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import * as o from "../../src/tensor/ops.ts";
import { init, initParams, type ParamScope } from "../../src/tensor/params.ts";
import { Rng } from "../../src/tensor/rng.ts";
import type { Tensor } from "../../src/tensor/symbolic.ts";
import { compileTrainStep, paramSpecsOf } from "../../src/train/train-step.ts";

test("AdamW and EMA match a hand-computed float64 update over three steps", async () => {
  const c = [0.5, -2, 3];
  const step = await compileTrainStep(
    (scope, b) => o.sum(o.mul(o.mul(scope.param("w", [3], init.zeros()), b["c"]!), b["s"]!)),
    { c: { shape: [3] }, s: { shape: [] } },
    { adamw: { beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.1 } },
  );
  const w0 = [1, -1, 0.25];
  const state = step.initState(new Map([["w", new HostTensor(Float32Array.from(w0), [3])]]));
  // reference, float64
  let p = [...w0];
  let m = [0, 0, 0];
  let v = [0, 0, 0];
  let ema = [...w0];
  const lr = 0.01;
  const decay = 0.9;
  const scales = [1, -0.5, 2];
  for (let t = 1; t <= 3; t++) {
    const s = scales[t - 1]!;
    const r = await step.step(
      state,
      { c: new HostTensor(Float32Array.from(c), [3]), s: HostTensor.scalar(s) },
      lr,
      decay,
    );
    const g = c.map((ci) => ci * s);
    assert.ok(Math.abs(r.loss - p.reduce((a, pi, i) => a + pi * g[i]!, 0)) < 1e-5);
    assert.ok(Math.abs(r.gradNorm - Math.hypot(...g)) < 1e-5);
    p = p.map((pi) => pi * (1 - lr * 0.1));
    m = m.map((mi, i) => 0.9 * mi + 0.1 * g[i]!);
    v = v.map((vi, i) => 0.99 * vi + 0.01 * g[i]! ** 2);
    const bc1 = 1 - 0.9 ** t;
    const bc2 = 1 - 0.99 ** t;
    p = p.map((pi, i) => pi - (lr / bc1) * (m[i]! / (Math.sqrt(v[i]!) / Math.sqrt(bc2) + 1e-8)));
    ema = ema.map((e, i) => decay * e + (1 - decay) * p[i]!);
    await step.sync(state); // (a no-op on the CPU; on a GPU the state comes back from it)
    const got = Array.from(state.params.get("w")!.data);
    const gotEma = Array.from(state.ema!.get("w")!.data);
    for (let i = 0; i < 3; i++) {
      assert.ok(Math.abs(got[i]! - p[i]!) < 1e-6, `step ${t}: w[${i}] ${got[i]} vs ${p[i]}`);
      assert.ok(Math.abs(gotEma[i]! - ema[i]!) < 1e-6, `step ${t}: ema[${i}] ${gotEma[i]} vs ${ema[i]}`);
      assert.ok(Math.abs(state.m.get("w")!.data[i]! - m[i]!) < 1e-6);
      assert.ok(Math.abs(state.v.get("w")!.data[i]! - v[i]!) < 1e-6);
    }
  }
  assert.equal(state.step, 3);
});

test("moments and EMA are updated in their own memory; memory another input shares gets a fresh output", async () => {
  const mlp = (scope: ParamScope, b: Readonly<Record<string, Tensor>>) =>
    mse(linear(scope.sub("l2"), silu(linear(scope.sub("l1"), b["x"]!, 16)), 2), b["y"]!);
  const batch = { x: { shape: [8, 4] }, y: { shape: [8, 2] } };
  const step = await compileTrainStep(mlp, batch, { adamw: { weightDecay: 0.01 } });
  const rng = new Rng(3);
  const feeds = { x: new HostTensor(rng.normal(32), [8, 4]), y: new HostTensor(rng.normal(16), [8, 2]) };
  const params = initParams(
    paramSpecsOf((s, g) => mlp(s, { x: g.input("x", [8, 4]), y: g.input("y", [8, 2]) })),
    rng,
  );
  const copy = (ps: ReadonlyMap<string, HostTensor<"float32">>) =>
    new Map([...ps].map(([k, t]) => [k, t.clone()]));
  // the reference: every tensor its own array, the moments packed as views of one buffer (as a
  // checkpoint loads them)
  const ref = step.initState(copy(params));
  const names = [...ref.m.keys()];
  const sizes = names.map((k) => ref.m.get(k)!.data.length);
  const packed = new Float32Array(sizes.reduce((a, b) => a + b, 0));
  let at = 0;
  names.forEach((k, i) => {
    ref.m.set(k, new HostTensor(packed.subarray(at, at + sizes[i]!), ref.m.get(k)!.shape));
    at += sizes[i]!;
  });
  const mBefore = names.map((k) => ref.m.get(k)!.data);
  const vBefore = names.map((k) => ref.v.get(k)!.data);
  const emaBefore = names.map((k) => ref.ema!.get(k)!.data);
  // the same start, but the EMA's map holds the weights' own tensors (shared memory)
  const shared = step.initState(copy(params));
  shared.ema = new Map(shared.params);
  for (let k = 0; k < 3; k++) {
    await step.step(ref, feeds, 0.01, 0.9);
    await step.step(shared, feeds, 0.01, 0.9);
  }
  names.forEach((k, i) => {
    assert.equal(ref.m.get(k)!.data, mBefore[i], `${k}: m in place`);
    assert.equal(ref.v.get(k)!.data, vBefore[i], `${k}: v in place`);
    assert.equal(ref.ema!.get(k)!.data, emaBefore[i], `${k}: ema in place`);
    assert.deepEqual(shared.params.get(k)!.data, ref.params.get(k)!.data, `${k}: weights`);
    assert.deepEqual(shared.ema!.get(k)!.data, ref.ema!.get(k)!.data, `${k}: ema`);
    assert.deepEqual(shared.m.get(k)!.data, ref.m.get(k)!.data, `${k}: m`);
  });
  assert.ok(
    packed.some((x) => x !== 0),
    "the packed moments were written",
  );
});

test("gradient clipping scales the update to the global norm", async () => {
  const step = await compileTrainStep(
    (scope) => o.sum(o.mul(scope.param("w", [2], init.zeros()), 100)),
    {},
    { clipGradNorm: 1, adamw: { weightDecay: 0, beta1: 0, beta2: 0, eps: 0 }, ema: false },
  );
  const state = step.initState(new Map([["w", HostTensor.zeros([2])]]));
  const r = await step.step(state, {}, 1);
  // unclipped norm is reported; with β=0 and eps=0 Adam's step is sign(g)·lr regardless of scale
  assert.ok(Math.abs(r.gradNorm - 100 * Math.SQRT2) < 1e-3);
  await step.sync(state);
  assert.ok(Math.abs(state.params.get("w")!.data[0]! + 1) < 1e-5);
});

test("a small MLP fits a synthetic regression to near-zero loss", async () => {
  const rng = new Rng(0);
  const n = 64;
  const x = rng.uniform(n * 2, -1, 1);
  const y = new Float32Array(n);
  for (let i = 0; i < n; i++) y[i] = Math.sin(2 * x[2 * i]!) + x[2 * i + 1]! ** 2;
  const model = (scope: ParamScope, xb: Tensor) =>
    linear(scope.sub("l3"), silu(linear(scope.sub("l2"), silu(linear(scope.sub("l1"), xb, 64)), 64)), 1);
  const step = await compileTrainStep((scope, b) => mse(model(scope, b["x"]!), b["y"]!), {
    x: { shape: [n, 2] },
    y: { shape: [n, 1] },
  });
  const specs = paramSpecsOf((scope, g) => model(scope, g.input("x", [n, 2])));
  const state = step.initState(initParams(specs, new Rng(1)));
  const batch = { x: new HostTensor(x, [n, 2]), y: new HostTensor(y, [n, 1]) };
  const first = (await step.step(state, batch, 1e-2)).loss;
  let last = first;
  for (let i = 0; i < 400; i++) last = (await step.step(state, batch, 1e-2)).loss;
  assert.ok(first > 0.1, `initial loss ${first}`);
  assert.ok(last < 2e-3, `final loss ${last} (from ${first})`);
});

test("a small conv net learns a fixed 3x3 filter to near-zero loss", async () => {
  const rng = new Rng(2);
  const n = 16;
  const x = rng.normal(n * 8 * 8);
  // target: a fixed blur-and-shift filter applied with padding 1
  const k = [0.1, 0.2, 0, 0.3, -0.5, 0.1, 0, 0.2, 0.4];
  const y = new Float32Array(n * 8 * 8);
  for (let s = 0; s < n; s++) {
    for (let i = 0; i < 8; i++) {
      for (let j = 0; j < 8; j++) {
        let acc = 0;
        for (let a = 0; a < 3; a++) {
          for (let b = 0; b < 3; b++) {
            const ii = i + a - 1;
            const jj = j + b - 1;
            if (ii >= 0 && ii < 8 && jj >= 0 && jj < 8) acc += k[a * 3 + b]! * x[s * 64 + ii * 8 + jj]!;
          }
        }
        y[s * 64 + i * 8 + j] = acc;
      }
    }
  }
  const model = (scope: ParamScope, xb: Tensor) =>
    conv2d(scope.sub("c2"), silu(conv2d(scope.sub("c1"), xb, 8, 3, { padding: 1 })), 1, 1);
  const step = await compileTrainStep((scope, b) => mse(model(scope, b["x"]!), b["y"]!), {
    x: { shape: [n, 1, 8, 8] },
    y: { shape: [n, 1, 8, 8] },
  });
  const specs = paramSpecsOf((scope, g) => model(scope, g.input("x", [n, 1, 8, 8])));
  const state = step.initState(initParams(specs, new Rng(3)));
  const batch = { x: new HostTensor(x, [n, 1, 8, 8]), y: new HostTensor(y, [n, 1, 8, 8]) };
  const first = (await step.step(state, batch, 1e-2)).loss;
  let last = first;
  for (let i = 0; i < 300; i++) last = (await step.step(state, batch, 1e-2)).loss;
  assert.ok(last < first / 100 && last < 5e-3, `final loss ${last} (from ${first})`);
});

test("on the CPU provider the state stays on the host: sync changes nothing, deviceOutputs are ignored", async () => {
  const step = await compileTrainStep(
    (scope, b) => o.sum(o.mul(scope.param("w", [2], init.zeros()), b["c"]!)),
    { c: { shape: [2] } },
    { session: { executionProviders: ["cpu"] } },
  );
  const state = step.initState(new Map([["w", HostTensor.zeros([2])]]));
  await step.step(state, { c: new HostTensor(Float32Array.of(1, -1), [2]) }, 0.1);
  const [params, m, v, ema] = [state.params, state.m, state.v, state.ema];
  const w = [...state.params.get("w")!.data];
  await step.sync(state);
  assert.equal(state.params, params);
  assert.equal(state.m, m);
  assert.equal(state.v, v);
  assert.equal(state.ema, ema);
  assert.deepEqual([...state.params.get("w")!.data], w);
  // AdamW's first step moves each weight by lr against its gradient's sign
  assert.ok(Math.abs(w[0]! + 0.1) < 1e-6 && Math.abs(w[1]! - 0.1) < 1e-6);
  step.dispose();
});

test("frozen parameters are constants of the step: untouched, no moments, and the rest still learns", async () => {
  const { partitionParams } = await import("../../src/tensor/params.ts");
  const lossFn = (scope: ParamScope, b: Readonly<Record<string, Tensor>>) =>
    mse(linear(scope.sub("head"), silu(linear(scope.sub("base"), b["x"]!, 8)), 1), b["y"]!);
  const specs = paramSpecsOf((s, g) => lossFn(s, { x: g.input("x", [16, 4]), y: g.input("y", [16, 1]) }));
  const all = initParams(specs, new Rng(0));
  const { trainable, frozen } = partitionParams(all, "head.");
  assert.deepEqual([...trainable.keys()], ["head.weight", "head.bias"]);
  assert.deepEqual([...frozen.keys()], ["base.weight", "base.bias"]);
  assert.deepEqual([...partitionParams(all, /bias$/).trainable.keys()], ["base.bias", "head.bias"]);
  const step = await compileTrainStep(lossFn, { x: { shape: [16, 4] }, y: { shape: [16, 1] } }, { frozen });
  assert.deepEqual(
    step.specs.map((s) => s.name),
    ["head.weight", "head.bias"],
  );
  const head0 = Float32Array.from(trainable.get("head.weight")!.data);
  const state = step.initState(trainable);
  assert.deepEqual([...state.m.keys()], ["head.weight", "head.bias"]);
  const rng = new Rng(1);
  const x = new HostTensor(rng.normal(64), [16, 4]);
  const y = new HostTensor(rng.normal(16), [16, 1]);
  const first = (await step.step(state, { x, y }, 0.05, 0)).loss;
  let last = first;
  for (let i = 0; i < 40; i++) last = (await step.step(state, { x, y }, 0.05, 0)).loss;
  assert.ok(last < first * 0.9, `loss ${first} → ${last}`);
  assert.ok(!state.params.has("base.weight"));
  assert.notDeepEqual(Float32Array.from(state.params.get("head.weight")!.data), head0);
});
