import assert from "node:assert/strict";
import { test } from "node:test";
import { Rng } from "../../src/tensor/rng.ts";

test("same seed gives the same stream; different seeds differ", () => {
  const a = new Rng(42).normal(1000);
  const b = new Rng(42).normal(1000);
  const c = new Rng(43).normal(1000);
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
});

test("normals have mean 0 and variance 1; uniforms cover [0, 1)", () => {
  const x = new Rng(7).normal(200_000);
  let m = 0;
  for (const v of x) m += v;
  m /= x.length;
  let v2 = 0;
  for (const v of x) v2 += (v - m) ** 2;
  v2 /= x.length;
  assert.ok(Math.abs(m) < 0.01, `mean ${m}`);
  assert.ok(Math.abs(v2 - 1) < 0.02, `variance ${v2}`);
  const u = new Rng(8).uniform(100_000);
  let lo = 1;
  let hi = 0;
  for (const v of u) {
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  assert.ok(lo >= 0 && lo < 0.001 && hi < 1 && hi > 0.999);
});

test("split and fold give independent, reproducible streams", () => {
  const r = new Rng(1);
  const s1 = r.split().uniform(8);
  const s2 = r.split().uniform(8);
  assert.notDeepEqual(s1, s2);
  const r2 = new Rng(1);
  assert.deepEqual(r2.split().uniform(8), s1);
  assert.deepEqual(new Rng(1).fold("noise").uniform(4), new Rng(1).fold("noise").uniform(4));
  assert.notDeepEqual(new Rng(1).fold("noise").uniform(4), new Rng(1).fold("init").uniform(4));
});

test("a saved position resumes the stream exactly", () => {
  const r = new Rng(5);
  r.uniform(40); // 40 words = 10 blocks
  const pos = r.position;
  const next = r.uniform(12);
  assert.deepEqual(Rng.at(r.key, pos).uniform(12), next);
});

test("permutation is a permutation and int is in range", () => {
  const p = new Rng(3).permutation(1000);
  assert.deepEqual(
    Array.from(p).sort((a, b) => a - b),
    Array.from({ length: 1000 }, (_, i) => i),
  );
  const r = new Rng(4);
  for (let i = 0; i < 1000; i++) {
    const k = r.int(7);
    assert.ok(k >= 0 && k < 7);
  }
});
