/**
 * Conditioning as one type and classifier-free guidance as a transformation over conditions: for
 * each kind (class labels, text embeddings with mask and pooled vector, a control image), the guided
 * prediction equals ε(∅) + w·(ε(c) − ε(∅)) computed by hand, from ONE batched forward of [uncond | cond].
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  batchOf,
  type Conditioning,
  classCondition,
  concatConditions,
  noCondition,
} from "../../src/diffusion/conditioning.ts";
import { classifierFreeGuidance } from "../../src/diffusion/guidance.ts";
import { HostTensor } from "../../src/tensor/host.ts";

const f32 = (data: number[], shape: number[]) => new HostTensor<"float32">(Float32Array.from(data), shape);

/** A toy conditional network: out = x·(1 + k) + k per sample, k a number that summarizes the condition. */
function toyNet(calls: { n: number; batches: number[] }, key: (c: Conditioning, i: number) => number) {
  return (x: HostTensor, _t: number, c: Conditioning) => {
    calls.n++;
    calls.batches.push(batchOf(c));
    const n = x.shape[0]!;
    assert.equal(batchOf(c), n, "the conditioning is for the batch it is called with");
    const per = x.size / n;
    const out = new Float32Array(x.size);
    for (let i = 0; i < n; i++) {
      const k = key(c, i);
      for (let j = 0; j < per; j++) out[i * per + j] = (x.data[i * per + j] as number) * (1 + k) + k;
    }
    return new HostTensor(out, x.shape);
  };
}

const x = f32([0.5, -1, 2, 0.25], [2, 2]);
const hand = (k: (i: number) => number, u: (i: number) => number, w: number) =>
  [0, 1].flatMap((i) =>
    [0, 1].map((j) => {
      const xv = x.data[i * 2 + j]!;
      const ec = Math.fround(xv * (1 + k(i)) + k(i));
      const eu = Math.fround(xv * (1 + u(i)) + u(i));
      return eu + w * (ec - eu);
    }),
  );

test("class labels: the null label is the unconditional half; one batched forward per call", async () => {
  const calls = { n: 0, batches: [] as number[] };
  const net = toyNet(calls, (c, i) => (c.kind === "class" ? c.labels[i]! : Number.NaN));
  const cond = classCondition([3, 7]);
  const uncond = classCondition([10, 10]);
  const guided = classifierFreeGuidance(net, cond, uncond, 2.5);
  const y = await guided(x, 500);
  assert.equal(calls.n, 1);
  assert.deepEqual(calls.batches, [4]);
  const want = hand(
    (i) => [3, 7][i]!,
    () => 10,
    2.5,
  );
  for (const [i, v] of y.toArray().entries()) assert.ok(Math.abs(v - want[i]!) < 1e-4, `${v} vs ${want[i]}`);
  // scale 1: the conditional prediction alone; 0: the unconditional alone (one forward of N each)
  const c1 = await classifierFreeGuidance(net, cond, uncond, 1)(x, 1);
  const c0 = await classifierFreeGuidance(net, cond, uncond, 0)(x, 1);
  assert.deepEqual(calls.batches, [4, 2, 2]);
  assert.deepEqual(
    c1.toArray(),
    hand(
      (i) => [3, 7][i]!,
      () => 0,
      1,
    ),
  );
  assert.deepEqual(
    c0.toArray(),
    hand(
      () => 10,
      () => 0,
      1,
    ),
  );
});

test("negative conditioning: any condition of the same kind stands in for the unconditional half", async () => {
  const calls = { n: 0, batches: [] as number[] };
  const net = toyNet(calls, (c, i) => (c.kind === "class" ? c.labels[i]! : Number.NaN));
  const y = await classifierFreeGuidance(net, classCondition([1, 2]), classCondition([4, 5]), 3)(x, 0);
  const want = hand(
    (i) => [1, 2][i]!,
    (i) => [4, 5][i]!,
    3,
  );
  for (const [i, v] of y.toArray().entries()) assert.ok(Math.abs(v - want[i]!) < 1e-4);
});

test("text embeddings with mask, pooled vector and a control image batch as [uncond | cond]", async () => {
  const calls = { n: 0, batches: [] as number[] };
  // k = Σ embeds·mask + pooled + control mean, per sample
  const net = toyNet(calls, (c, i) => {
    assert.equal(c.kind, "text");
    if (c.kind !== "text") return 0;
    const [, l, d] = c.embeds.shape as [number, number, number];
    let k = 0;
    for (let t = 0; t < l; t++)
      for (let e = 0; e < d; e++) k += c.embeds.data[(i * l + t) * d + e]! * c.mask!.data[i * l + t]!;
    k += c.pooled!.data[i]!;
    k += c.control!.image.data[i]! * (c.control!.scale as number);
    return k;
  });
  const text = (e: number[], m: number[], p: number[], ctl: number[]): Conditioning => ({
    kind: "text",
    embeds: f32(e, [2, 2, 1]),
    mask: f32(m, [2, 2]),
    pooled: f32(p, [2, 1]),
    control: { image: f32(ctl, [2, 1, 1, 1]), scale: 0.5 },
  });
  const cond = text([1, 2, 3, 4], [1, 0, 1, 1], [0.5, -0.5], [2, 4]);
  const uncond = text([0, 0, 1, 0], [1, 1, 1, 1], [0, 0], [2, 4]);
  const y = await classifierFreeGuidance(net, cond, uncond, 4, {})(x, 10);
  assert.deepEqual(calls.batches, [4]);
  const kc = [1 + 0.5 + 1, 3 + 4 - 0.5 + 2];
  const ku = [0 + 1, 1 + 2];
  const want = hand(
    (i) => kc[i]!,
    (i) => ku[i]!,
    4,
  );
  for (const [i, v] of y.toArray().entries()) assert.ok(Math.abs(v - want[i]!) < 1e-3, `${v} vs ${want[i]}`);
});

test("conditionings that cannot be batched together are refused with a reason", () => {
  assert.equal(batchOf(concatConditions(noCondition(2), noCondition(3))), 5);
  assert.throws(
    () => concatConditions(classCondition([1]), noCondition(1)),
    /"class" conditioning with a "none"/,
  );
  const t = (l: number, pooled: boolean): Conditioning => ({
    kind: "text",
    embeds: f32(new Array(l * 2).fill(0), [1, l, 2]),
    ...(pooled ? { pooled: f32([0], [1, 1]) } : {}),
  });
  assert.throws(() => concatConditions(t(2, false), t(3, false)), /all but the first axis must agree/);
  assert.throws(() => concatConditions(t(2, true), t(2, false)), /only one has a mask or a pooled vector/);
  assert.throws(
    () => classifierFreeGuidance(() => x, classCondition([1, 2]), classCondition([0]), 2),
    /unconditional counterpart is for 1 samples, the condition for 2/,
  );
});
