// The Fréchet distance against closed forms: identical sets, diagonal Gaussians, Gaussians sharing
// an eigenbasis, and non-commuting 2×2 covariances (tr (Σ₁^½Σ₂Σ₁^½)^½ = √(tr Σ₁Σ₂ + 2√(det Σ₁ det Σ₂))).
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  frechetDistance,
  frechetDistanceOf,
  type GaussianStats,
  gaussianStats,
  sqrtPsd,
  symmetricEigen,
} from "../../src/eval/frechet.ts";
import { Rng } from "../../src/tensor/rng.ts";

const gaussian = (mean: number[], cov: number[]): GaussianStats => ({
  dim: mean.length,
  n: 0,
  mean: Float64Array.from(mean),
  cov: Float64Array.from(cov),
});

/** A random rotation of R^d (Gram–Schmidt of a Gaussian matrix), row-major. */
function rotation(d: number, rng: Rng): Float64Array {
  const q = Float64Array.from(rng.normal(d * d));
  for (let i = 0; i < d; i++) {
    for (let j = 0; j < i; j++) {
      let dot = 0;
      for (let k = 0; k < d; k++) dot += q[i * d + k]! * q[j * d + k]!;
      for (let k = 0; k < d; k++) q[i * d + k]! -= dot * q[j * d + k]!;
    }
    let norm = 0;
    for (let k = 0; k < d; k++) norm += q[i * d + k]! ** 2;
    for (let k = 0; k < d; k++) q[i * d + k]! /= Math.sqrt(norm);
  }
  return q;
}

/** Rᵀ diag(e) R */
function withEigen(r: Float64Array, e: readonly number[]): number[] {
  const d = e.length;
  const out = new Array<number>(d * d).fill(0);
  for (let i = 0; i < d; i++)
    for (let j = 0; j < d; j++)
      for (let k = 0; k < d; k++) out[i * d + j]! += r[k * d + i]! * e[k]! * r[k * d + j]!;
  return out;
}

const close = (a: number, b: number, tol: number, what: string) =>
  assert.ok(Math.abs(a - b) <= tol * Math.max(1, Math.abs(b)), `${what}: ${a} vs ${b}`);

test("Jacobi eigendecomposition reconstructs a random symmetric matrix", () => {
  const d = 12;
  const rng = new Rng(1);
  const e = Array.from(rng.normal(d));
  const a = Float64Array.from(withEigen(rotation(d, rng), e));
  const { values, vectors } = symmetricEigen(a, d);
  assert.deepEqual(
    [...values].sort((x, y) => x - y).map((v) => v.toFixed(9)),
    [...e].sort((x, y) => x - y).map((v) => v.toFixed(9)),
  );
  for (let i = 0; i < d; i++) {
    for (let j = 0; j < d; j++) {
      let s = 0;
      for (let k = 0; k < d; k++) s += vectors![k * d + i]! * values[k]! * vectors![k * d + j]!;
      close(s, a[i * d + j]!, 1e-10, `A[${i},${j}]`);
    }
  }
  const root = sqrtPsd(Float64Array.from(withEigen(rotation(d, rng), e.map(Math.abs))), d);
  assert.ok(root.every(Number.isFinite));
});

test("identical feature sets are at distance ~0", () => {
  const rng = new Rng(2);
  const n = 300;
  const d = 32;
  const f = rng.normal(n * d);
  for (let i = 0; i < f.length; i++) f[i] = Math.max(0, f[i]! + 0.3); // ReLU-like, rank-deficient-ish
  const fd = frechetDistanceOf(f, n, f, n, d);
  assert.ok(fd < 1e-6, `FD of a set with itself: ${fd}`);
});

test("diagonal Gaussians: FD = ‖Δμ‖² + Σ (σ₁ − σ₂)²", () => {
  const m1 = [0, 1, -2, 0.5];
  const m2 = [1, 1, 0, -0.5];
  const v1 = [1, 4, 0.25, 2];
  const v2 = [2, 1, 0.25, 0.5];
  const diag = (v: number[]) => v.flatMap((x, i) => v.map((_, j) => (i === j ? x : 0)));
  let want = 0;
  for (let i = 0; i < 4; i++) want += (m1[i]! - m2[i]!) ** 2 + (Math.sqrt(v1[i]!) - Math.sqrt(v2[i]!)) ** 2;
  close(frechetDistance(gaussian(m1, diag(v1)), gaussian(m2, diag(v2))), want, 1e-12, "diagonal");
});

test("full covariances sharing an eigenbasis: FD = ‖Δμ‖² + Σ (√λ₁ − √λ₂)²", () => {
  const d = 16;
  const rng = new Rng(3);
  const r = rotation(d, rng);
  const e1 = Array.from(rng.uniform(d, 0.1, 3));
  const e2 = Array.from(rng.uniform(d, 0.1, 3));
  e1[0] = 0; // a singular covariance: eigenvalues that round to slightly negative get clipped
  const m1 = Array.from(rng.normal(d));
  const m2 = Array.from(rng.normal(d));
  let want = 0;
  for (let i = 0; i < d; i++) want += (m1[i]! - m2[i]!) ** 2 + (Math.sqrt(e1[i]!) - Math.sqrt(e2[i]!)) ** 2;
  const got = frechetDistance(gaussian(m1, withEigen(r, e1)), gaussian(m2, withEigen(r, e2)));
  close(got, want, 1e-7, "shared eigenbasis"); // the zero eigenvalue costs √ε
});

test("non-commuting 2×2 covariances match the closed form, and FD is symmetric", () => {
  const s1 = [2, 0.8, 0.8, 1];
  const s2 = [0.5, -0.3, -0.3, 1.5];
  const m1 = [0.3, -1];
  const m2 = [-0.2, 0.4];
  const det = (s: number[]) => s[0]! * s[3]! - s[1]! * s[2]!;
  const trProd = s1[0]! * s2[0]! + s1[1]! * s2[2]! + s1[2]! * s2[1]! + s1[3]! * s2[3]!;
  const trSqrt = Math.sqrt(trProd + 2 * Math.sqrt(det(s1) * det(s2)));
  const want =
    (m1[0]! - m2[0]!) ** 2 + (m1[1]! - m2[1]!) ** 2 + s1[0]! + s1[3]! + s2[0]! + s2[3]! - 2 * trSqrt;
  const ab = frechetDistance(gaussian(m1, s1), gaussian(m2, s2));
  const ba = frechetDistance(gaussian(m2, s2), gaussian(m1, s1));
  close(ab, want, 1e-12, "2×2 closed form");
  close(ba, ab, 1e-12, "symmetry");
});

test("FD of sample sets is symmetric and grows with a mean shift", () => {
  const rng = new Rng(4);
  const n = 400;
  const d = 24;
  const a = rng.normal(n * d);
  const b = rng.normal(n * d);
  const shifted = b.map((v, i) => (i % d === 0 ? v + 2 : v));
  const ab = frechetDistanceOf(a, n, b, n, d);
  close(frechetDistanceOf(b, n, a, n, d), ab, 1e-9, "symmetry");
  const as = frechetDistanceOf(a, n, shifted, n, d);
  assert.ok(as > ab + 3, `a shift of 2 in one coordinate adds ~4: ${ab} → ${as}`);
  const stats = gaussianStats(Float32Array.of(1, 2, 3, 5), 2, 2);
  assert.deepEqual([...stats.mean], [2, 3.5]);
  assert.deepEqual([...stats.cov], [2, 3, 3, 4.5]);
});
