/**
 * Float32 arithmetic on the host, rounded the way a float32 tensor library rounds.
 *
 * Schedules are computed in float64, but the reference samplers (Hugging Face diffusers) do their step
 * math in float32 tensors: every operation rounds its result to float32. The samplers reproduce that by
 * rounding each intermediate with `f32` (= Math.fround) in the same order; float64 then float32 rounding
 * of one +, −, ×, ÷ or √ of float32 operands is exact rounding, so these match bit for bit.
 */

import { formatShape, HostTensor, sameShape } from "../tensor/host.ts";

/** Round to the nearest float32. */
export const f32 = Math.fround;

/** A host float32 tensor. */
export type F32 = HostTensor<"float32">;

function checkSameShape(a: F32, b: F32, what: string): void {
  if (!sameShape(a.shape, b.shape)) {
    throw new Error(`${what}: shapes ${formatShape(a.shape)} and ${formatShape(b.shape)} differ`);
  }
}

/** Elementwise `fn(a[i])`, stored (so rounded) as float32. */
export function map(a: F32, fn: (x: number, i: number) => number): F32 {
  const out = new Float32Array(a.size);
  const x = a.data;
  for (let i = 0; i < out.length; i++) out[i] = fn(x[i]!, i);
  return new HostTensor(out, a.shape);
}

/** Elementwise `fn(a[i], b[i])` of two tensors of one shape. */
export function zip(a: F32, b: F32, fn: (x: number, y: number, i: number) => number): F32 {
  checkSameShape(a, b, "zip");
  const out = new Float32Array(a.size);
  const x = a.data;
  const y = b.data;
  for (let i = 0; i < out.length; i++) out[i] = fn(x[i]!, y[i]!, i);
  return new HostTensor(out, a.shape);
}

/** Elementwise `fn(a[i], b[i], c[i])` of three tensors of one shape. */
export function zip3(
  a: F32,
  b: F32,
  c: F32,
  fn: (x: number, y: number, z: number, i: number) => number,
): F32 {
  checkSameShape(a, b, "zip3");
  checkSameShape(a, c, "zip3");
  const out = new Float32Array(a.size);
  const x = a.data;
  const y = b.data;
  const z = c.data;
  for (let i = 0; i < out.length; i++) out[i] = fn(x[i]!, y[i]!, z[i]!, i);
  return new HostTensor(out, a.shape);
}

/** float32 √x, log x and exp x (torch rounds its float32 transcendental results the same way, to ≤ 1 ulp). */
export const sqrt32 = (x: number): number => f32(Math.sqrt(x));
export const log32 = (x: number): number => f32(Math.log(x));
export const exp32 = (x: number): number => f32(Math.exp(x));

/** A float32 host tensor from `{ data, shape }` or a HostTensor, checked. */
export function asF32(t: { data: Float32Array; shape: readonly number[] } | HostTensor, what: string): F32 {
  const h = t instanceof HostTensor ? t : HostTensor.from(t);
  if (h.dtype !== "float32") throw new Error(`${what} must be float32, got ${h.dtype}`);
  return h as F32;
}

const bitsToF32 = (bits: number): number => new Float32Array(Uint32Array.of(bits).buffer)[0]!;
const LOG_P = [0, 0x3f800000, 0x4007361c, 0x3fbd70a9, 0x3ec30333, 0x3cd42bcd].map(bitsToF32);
const LOG_Q = [0x3f800000, 0x4027361c, 0x401cfe0d, 0x3f7c8ae4, 0x3e1e5bf3, 0x3bc083df].map(bitsToF32);
const LN2 = bitsToF32(0x3f317218);
const SQRT1_2 = bitsToF32(0x3f3504f3);
/** a·b + c with one float32 rounding (a fused multiply-add of float32 operands). */
const fma32 = (a: number, b: number, c: number): number => f32(a * b + c);

/**
 * numpy's float32 `log` on x86 (its AVX2/AVX-512 kernel, up to ~4 ulp from the true log): x = m·2^e with
 * m ∈ (√½, √2], log m ≈ P(m − 1)/Q(m − 1) (Remez rational, Horner with fused multiply-adds), plus e·ln 2.
 * The reference derives fractional timesteps from these logs, so they are reproduced to the bit.
 */
export function numpyLog32(x: number): number {
  if (Number.isNaN(x) || x < 0) return Number.NaN;
  if (x === 0) return Number.NEGATIVE_INFINITY;
  if (x === Number.POSITIVE_INFINITY) return x;
  const bits = new Uint32Array(Float32Array.of(x).buffer)[0]!;
  let e = (bits >>> 23) - 126;
  let m = bitsToF32((bits & 0x007fffff) | 0x3f000000);
  if (m <= SQRT1_2) {
    m = m + m;
    e -= 1;
  }
  const y = f32(m - 1);
  let num = fma32(LOG_P[5]!, y, LOG_P[4]!);
  for (let k = 3; k >= 0; k--) num = fma32(num, y, LOG_P[k]!);
  let den = fma32(LOG_Q[5]!, y, LOG_Q[4]!);
  for (let k = 3; k >= 0; k--) den = fma32(den, y, LOG_Q[k]!);
  return fma32(e, LN2, f32(num / den));
}
