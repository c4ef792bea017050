/**
 * `allclose` for tests: |actual − expected| ≤ atol + rtol·|expected| elementwise (NumPy's rule),
 * with a failure message that says how far off the worst element is and where.
 */
import assert from "node:assert/strict";
import type { HostTensor } from "../../src/tensor/host.ts";
import type { RefTensor } from "./ref-core.ts";

export type Values = ArrayLike<number> | HostTensor | RefTensor;

export interface CloseOptions {
  rtol?: number;
  atol?: number;
  /** What is compared, for the message. */
  what?: string;
}

export interface CloseReport {
  ok: boolean;
  maxAbs: number;
  maxRel: number;
  /** Flat index of the element that exceeds its tolerance by the most (or of the largest error). */
  worst: number;
}

function unpack(v: Values): { data: ArrayLike<number>; shape: readonly number[] | undefined } {
  if ("shape" in v && "data" in v) {
    const d = v.data as ArrayLike<number | bigint>;
    const data = typeof d[0] === "bigint" ? Array.from(d, Number) : (d as ArrayLike<number>);
    return { data, shape: v.shape };
  }
  return { data: v as ArrayLike<number>, shape: undefined };
}

function unravel(k: number, shape: readonly number[] | undefined): string {
  if (!shape || shape.length === 0) return `${k}`;
  const idx: number[] = [];
  for (let ax = shape.length - 1; ax >= 0; ax--) {
    idx.unshift(k % shape[ax]!);
    k = Math.floor(k / shape[ax]!);
  }
  return `[${idx.join(", ")}]`;
}

export function allclose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  rtol: number,
  atol: number,
): CloseReport {
  let maxAbs = 0;
  let maxRel = 0;
  let worst = 0;
  let worstExcess = Number.NEGATIVE_INFINITY;
  let ok = actual.length === expected.length;
  for (let i = 0; i < Math.min(actual.length, expected.length); i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    if (Number.isNaN(a) && Number.isNaN(e)) continue;
    const err = a === e ? 0 : Math.abs(a - e);
    const rel = err === 0 ? 0 : err / Math.abs(e);
    const excess = Number.isNaN(err) ? Number.POSITIVE_INFINITY : err - (atol + rtol * Math.abs(e));
    if (excess > 0) ok = false;
    if (Number.isNaN(err)) maxAbs = Number.NaN;
    else if (err > maxAbs) maxAbs = err;
    if (rel > maxRel) maxRel = rel;
    if (excess > worstExcess) {
      worstExcess = excess;
      worst = i;
    }
  }
  return { ok, maxAbs, maxRel, worst };
}

/** Asserts that `actual` and `expected` have the same shape (when both have one) and are close. */
export function assertAllclose(actual: Values, expected: Values, opts: CloseOptions = {}): CloseReport {
  const rtol = opts.rtol ?? 1e-5;
  const atol = opts.atol ?? 1e-6;
  const what = opts.what ? `${opts.what}: ` : "";
  const a = unpack(actual);
  const e = unpack(expected);
  if (a.shape && e.shape) {
    assert.deepEqual(
      [...a.shape],
      [...e.shape],
      `${what}shape [${a.shape}] differs from expected [${e.shape}]`,
    );
  }
  assert.equal(a.data.length, e.data.length, `${what}${a.data.length} values, expected ${e.data.length}`);
  const r = allclose(a.data, e.data, rtol, atol);
  if (!r.ok) {
    const at = unravel(r.worst, e.shape ?? a.shape);
    assert.fail(
      `${what}not close (rtol ${rtol}, atol ${atol}): max abs error ${r.maxAbs.toExponential(3)}, ` +
        `max rel error ${r.maxRel.toExponential(3)}; worst at ${at}: got ${a.data[r.worst]}, expected ${e.data[r.worst]}`,
    );
  }
  return r;
}

/** max|a − b| / max|ref|, the diffusers fixtures' criterion. */
export function maxRel(a: ArrayLike<number>, ref: ArrayLike<number>): number {
  if (a.length !== ref.length) throw new Error(`maxRel: lengths differ (${a.length} vs ${ref.length})`);
  let d = 0;
  let m = 0;
  for (let i = 0; i < ref.length; i++) {
    d = Math.max(d, Math.abs(a[i]! - ref[i]!));
    m = Math.max(m, Math.abs(ref[i]!));
  }
  return d / m;
}
