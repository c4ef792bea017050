/**
 * 16-bit floating-point formats as raw bits: IEEE 754 binary16 ("F16": 1 sign, 5 exponent, 10
 * mantissa bits) and bfloat16 ("BF16": the top 16 bits of a float32: 1 sign, 8 exponent, 7 mantissa).
 *
 * float32 → 16 bits rounds to nearest, ties to even, as PyTorch's `.half()` / `.bfloat16()` do:
 * values past the largest finite half (65504, or above 65520 after rounding) become ±Infinity,
 * values below half's smallest subnormal (2^-24) round to ±0, NaN stays NaN (quiet). The other
 * direction is exact: every 16-bit value is a float32.
 */

/** float32 bit pattern → binary16 bit pattern (round to nearest even). */
export function f32BitsToF16(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const abs = x & 0x7fffffff;
  if (abs >= 0x47800000) {
    // |v| >= 2^16 (always overflows), Infinity or NaN.
    return sign | (abs > 0x7f800000 ? 0x7e00 : 0x7c00);
  }
  const e = abs >>> 23;
  if (e < 113) {
    // Below 2^-14: a half subnormal, value = q * 2^-24 with q = m * 2^(e - 126).
    if (e < 102) return sign; // < 2^-25: rounds to zero
    const m = (abs & 0x7fffff) | 0x800000;
    const shift = 126 - e; // 14..24
    let q = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (q & 1) === 1)) q++;
    return sign | q; // q may reach 0x400, the smallest normal: the bits are still right
  }
  let h = ((e - 112) << 10) | ((abs >>> 13) & 0x3ff);
  const rem = abs & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1) === 1)) h++; // a carry may roll into Infinity: right
  return sign | h;
}

/** float32 bit pattern → bfloat16 bit pattern (round to nearest even; NaN stays a quiet NaN). */
export function f32BitsToBf16(x: number): number {
  if ((x & 0x7fffffff) > 0x7f800000) return ((x >>> 16) | 0x0040) & 0xffff;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

let f16Table: Float32Array | null = null;

/** All 65536 binary16 values as float32 (built once, 256 KB). */
function f16Values(): Float32Array {
  if (f16Table) return f16Table;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >>> 10) & 0x1f;
    const m = h & 0x3ff;
    if (e === 0) t[h] = s * m * 2 ** -24;
    else if (e === 31) t[h] = m === 0 ? s * Number.POSITIVE_INFINITY : Number.NaN;
    else t[h] = s * (1 + m / 1024) * 2 ** (e - 15);
  }
  f16Table = t;
  return t;
}

/** binary16 bit pattern → its value. */
export function f16BitsToNumber(h: number): number {
  return f16Values()[h & 0xffff]!;
}

function bitsOf(src: Float32Array): Uint32Array {
  return new Uint32Array(src.buffer, src.byteOffset, src.length);
}

export function float32ToF16(src: Float32Array): Uint16Array {
  const bits = bitsOf(src);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < out.length; i++) out[i] = f32BitsToF16(bits[i]!);
  return out;
}

export function float32ToBf16(src: Float32Array): Uint16Array {
  const bits = bitsOf(src);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < out.length; i++) out[i] = f32BitsToBf16(bits[i]!);
  return out;
}

/**
 * binary16 → float32, into `out` when given. Element i is read before out[i] is written, front to
 * back, so `src` may lie in the upper half of `out`'s own memory (a widening in place: out[i] covers
 * bytes [4i, 4i + 4), before src[i + 1] at 2n + 2i + 2).
 */
export function f16ToFloat32(src: Uint16Array, out = new Float32Array(src.length)): Float32Array {
  const table = f16Values();
  for (let i = 0; i < out.length; i++) out[i] = table[src[i]!]!;
  return out;
}

/** bfloat16 → float32, into `out` when given (which may hold `src` in its upper half, as above). */
export function bf16ToFloat32(src: Uint16Array, out = new Float32Array(src.length)): Float32Array {
  const bits = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < out.length; i++) bits[i] = src[i]! << 16;
  return out;
}
