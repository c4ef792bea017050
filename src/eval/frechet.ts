/**
 * The Fréchet distance between two Gaussians fitted to feature vectors (Dowson & Landau 1982; as
 * FID, Heusel et al. 2017, with a digit classifier's features in place of Inception's):
 *
 *   d²(N(μ₁, Σ₁), N(μ₂, Σ₂)) = ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁^½ Σ₂ Σ₁^½)^½)
 *
 * All on the host in float64. Square roots of symmetric positive semi-definite matrices come from
 * a symmetric eigendecomposition by the cyclic Jacobi method (Golub & Van Loan §8.5): A = V Λ Vᵀ,
 * A^½ = V Λ^½ Vᵀ, where eigenvalues that round-off pushed slightly below zero are clipped to 0.
 * Writing the cross term as Σ₁^½ Σ₂ Σ₁^½ (symmetric PSD) rather than Σ₁Σ₂ (not symmetric) keeps
 * every eigenproblem symmetric, and tr((Σ₁^½ Σ₂ Σ₁^½)^½) = Σᵢ √λᵢ needs only its eigenvalues.
 */

/** A Gaussian fitted to n samples of dimension d: mean [d] and covariance [d, d] (row-major). */
export interface GaussianStats {
  readonly dim: number;
  readonly n: number;
  readonly mean: Float64Array;
  readonly cov: Float64Array;
}

/**
 * Mean and unbiased covariance (divisor n − 1) of n feature rows [n, d], in float64, two-pass
 * (centre first, then accumulate), so large means do not swamp the covariance.
 */
export function gaussianStats(features: ArrayLike<number>, n: number, d: number): GaussianStats {
  if (features.length !== n * d)
    throw new Error(`gaussianStats: ${features.length} values for ${n} × ${d} features`);
  if (n < 2) throw new Error(`gaussianStats: a covariance needs at least 2 samples, got ${n}`);
  const mean = new Float64Array(d);
  for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) mean[j]! += features[i * d + j]!;
  for (let j = 0; j < d; j++) mean[j]! /= n;
  const cov = new Float64Array(d * d);
  const row = new Float64Array(d);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < d; j++) row[j] = features[i * d + j]! - mean[j]!;
    for (let a = 0; a < d; a++) {
      const ra = row[a]!;
      if (ra === 0) continue;
      for (let b = a; b < d; b++) cov[a * d + b]! += ra * row[b]!;
    }
  }
  for (let a = 0; a < d; a++) {
    for (let b = a; b < d; b++) {
      const v = cov[a * d + b]! / (n - 1);
      cov[a * d + b] = v;
      cov[b * d + a] = v;
    }
  }
  return { dim: d, n, mean, cov };
}

/**
 * Eigenvalues and eigenvectors of a symmetric matrix a [n, n] (row-major; not modified) by cyclic
 * Jacobi rotations: each rotation J zeroes one off-diagonal pair of A ← Jᵀ A J (Golub & Van Loan,
 * Algorithm 8.5.2), and V ← V J accumulates them, until the off-diagonal mass is below round-off.
 * A stays symmetric, so only rows p and q are read and the new values are mirrored into columns.
 * `vectors` (omitted with `{ vectors: false }`) holds one eigenvector per ROW:
 * a = vectorsᵀ · diag(values) · vectors.
 */
export function symmetricEigen(
  a: Float64Array,
  n: number,
  opts: { vectors?: boolean } = {},
): { values: Float64Array; vectors: Float64Array | null } {
  if (a.length !== n * n) throw new Error(`symmetricEigen: ${a.length} values for a ${n} × ${n} matrix`);
  const m = Float64Array.from(a);
  const v = opts.vectors === false ? null : new Float64Array(n * n);
  if (v) for (let i = 0; i < n; i++) v[i * n + i] = 1;
  let total = 0;
  for (let i = 0; i < n * n; i++) total += m[i]! * m[i]!;
  const tol = 1e-30 * total;
  for (let sweep = 0; sweep < 100; sweep++) {
    let off = 0;
    for (let p = 0; p < n; p++) for (let q = p + 1; q < n; q++) off += m[p * n + q]! * m[p * n + q]!;
    if (off <= tol) break;
    for (let p = 0; p < n - 1; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = m[p * n + q]!;
        if (apq === 0) continue;
        const app = m[p * n + p]!;
        const aqq = m[q * n + q]!;
        // t = tan φ, the smaller root of t² + 2θt − 1 = 0, θ = (a_qq − a_pp) / (2 a_pq)
        const theta = (aqq - app) / (2 * apq);
        const t = (theta >= 0 ? 1 : -1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        const rp = p * n;
        const rq = q * n;
        for (let k = 0; k < n; k++) {
          if (k === p || k === q) continue;
          const akp = m[rp + k]!;
          const akq = m[rq + k]!;
          const kp = c * akp - s * akq;
          const kq = s * akp + c * akq;
          m[rp + k] = kp;
          m[k * n + p] = kp;
          m[rq + k] = kq;
          m[k * n + q] = kq;
        }
        m[rp + p] = app - t * apq;
        m[rq + q] = aqq + t * apq;
        m[rp + q] = 0;
        m[rq + p] = 0;
        if (v) {
          for (let k = 0; k < n; k++) {
            const vp = v[rp + k]!;
            const vq = v[rq + k]!;
            v[rp + k] = c * vp - s * vq;
            v[rq + k] = s * vp + c * vq;
          }
        }
      }
    }
  }
  const values = new Float64Array(n);
  for (let i = 0; i < n; i++) values[i] = m[i * n + i]!;
  return { values, vectors: v };
}

/** The PSD square root V · diag(√max(λ, 0)) · Vᵀ of a symmetric matrix [n, n]. */
export function sqrtPsd(a: Float64Array, n: number): Float64Array {
  const { values, vectors } = symmetricEigen(a, n);
  const out = new Float64Array(n * n);
  for (let k = 0; k < n; k++) {
    const r = Math.sqrt(Math.max(values[k]!, 0));
    if (r === 0) continue;
    const row = vectors!.subarray(k * n, (k + 1) * n); // eigenvector k
    for (let i = 0; i < n; i++) {
      const vi = row[i]! * r;
      if (vi === 0) continue;
      for (let j = 0; j < n; j++) out[i * n + j]! += vi * row[j]!;
    }
  }
  return out;
}

/** c = a · b for [n, n] matrices. */
function matmul(a: Float64Array, b: Float64Array, n: number): Float64Array {
  const c = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < n; k++) {
      const aik = a[i * n + k]!;
      if (aik === 0) continue;
      for (let j = 0; j < n; j++) c[i * n + j]! += aik * b[k * n + j]!;
    }
  }
  return c;
}

/**
 * d² between two fitted Gaussians (see the file comment); never negative. `sqrtCov1` may pass a
 * precomputed Σ₁^½ (`sqrtPsd(g1.cov, d)`) when one reference is compared with many sets.
 */
export function frechetDistance(g1: GaussianStats, g2: GaussianStats, sqrtCov1?: Float64Array): number {
  const d = g1.dim;
  if (g2.dim !== d) throw new Error(`frechetDistance: dimensions differ (${d} vs ${g2.dim})`);
  let meanTerm = 0;
  for (let i = 0; i < d; i++) meanTerm += (g1.mean[i]! - g2.mean[i]!) ** 2;
  let trace = 0;
  for (let i = 0; i < d; i++) trace += g1.cov[i * d + i]! + g2.cov[i * d + i]!;
  const s1h = sqrtCov1 ?? sqrtPsd(g1.cov, d);
  const cross = matmul(matmul(s1h, g2.cov, d), s1h, d);
  for (let i = 0; i < d; i++) {
    for (let j = i + 1; j < d; j++) {
      const sym = 0.5 * (cross[i * d + j]! + cross[j * d + i]!);
      cross[i * d + j] = sym;
      cross[j * d + i] = sym;
    }
  }
  let trSqrt = 0;
  for (const lambda of symmetricEigen(cross, d, { vectors: false }).values)
    trSqrt += Math.sqrt(Math.max(lambda, 0));
  return Math.max(0, meanTerm + trace - 2 * trSqrt);
}

/** Fréchet distance between two sets of feature rows, [n1, d] and [n2, d]. */
export function frechetDistanceOf(
  a: ArrayLike<number>,
  n1: number,
  b: ArrayLike<number>,
  n2: number,
  d: number,
): number {
  return frechetDistance(gaussianStats(a, n1, d), gaussianStats(b, n2, d));
}
