/**
 * A seeded, splittable random number generator (Philox4x32-10, Salmon et al. 2011,
 * "Parallel random numbers: as easy as 1, 2, 3").
 *
 * Philox is counter-based: block i of a stream is philox(key, i), so a generator is just a key and a
 * counter. `split()` and `fold(name)` derive independent child keys, which lets initialization,
 * noise and data order each draw from their own stream: the same seed gives the same run, and adding
 * a draw in one place does not shift the numbers drawn in another.
 */

const M0 = 0xd2511f53;
const M1 = 0xcd9e8d57;
const W0 = 0x9e3779b9;
const W1 = 0xbb67ae85;
const TAG_SPLIT = 0x53504c54;
const TAG_FOLD = 0x464f4c44;

/** floor(a*b / 2^32) for unsigned 32-bit a, b, exactly, in double arithmetic. */
function mulhi(a: number, b: number): number {
  const ah = a >>> 16;
  const al = a & 0xffff;
  const bh = b >>> 16;
  const bl = b & 0xffff;
  const t = ah * bl + al * bh + Math.floor((al * bl) / 65536);
  return (ah * bh + Math.floor(t / 65536)) >>> 0;
}

/** One Philox4x32-10 block: four 32-bit words from a 128-bit counter and a 64-bit key. */
export function philox(
  k0: number,
  k1: number,
  c: readonly [number, number, number, number],
  out: Uint32Array,
): void {
  let c0 = c[0] >>> 0;
  let c1 = c[1] >>> 0;
  let c2 = c[2] >>> 0;
  let c3 = c[3] >>> 0;
  for (let r = 0; r < 10; r++) {
    const hi0 = mulhi(M0, c0);
    const lo0 = Math.imul(M0, c0) >>> 0;
    const hi1 = mulhi(M1, c2);
    const lo1 = Math.imul(M1, c2) >>> 0;
    c0 = (hi1 ^ c1 ^ k0) >>> 0;
    c1 = lo1;
    c2 = (hi0 ^ c3 ^ k1) >>> 0;
    c3 = lo0;
    k0 = (k0 + W0) >>> 0;
    k1 = (k1 + W1) >>> 0;
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

function hashString(s: string): number {
  // FNV-1a, enough to turn a stream name into a 32-bit word.
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h >>> 0;
}

export class Rng {
  private readonly k0: number;
  private readonly k1: number;
  private ctrLo = 0;
  private ctrHi = 0;
  private readonly block = new Uint32Array(4);
  private blockPos = 4;
  private spareNormal: number | null = null;

  /** `seed`: any integer (up to 2^53) or a [k0, k1] key. */
  constructor(seed: number | readonly [number, number] = 0) {
    if (typeof seed === "number") {
      if (!Number.isSafeInteger(seed)) throw new Error(`seed must be an integer, got ${seed}`);
      const s = seed < 0 ? -seed : seed;
      this.k0 = (s % 0x100000000) >>> 0;
      this.k1 = (Math.floor(s / 0x100000000) ^ (seed < 0 ? 0x80000000 : 0)) >>> 0;
    } else {
      this.k0 = seed[0] >>> 0;
      this.k1 = seed[1] >>> 0;
    }
  }

  /** The key that identifies this stream (for saving a run's state). */
  get key(): [number, number] {
    return [this.k0, this.k1];
  }

  /** How many 4-word blocks have been drawn (with `key`, restores the exact position). */
  get position(): number {
    return this.ctrHi * 0x100000000 + this.ctrLo;
  }

  /** A generator at a saved position; the buffered remainder of a partly used block is discarded. */
  static at(key: readonly [number, number], position: number): Rng {
    const r = new Rng(key);
    r.ctrLo = (position % 0x100000000) >>> 0;
    r.ctrHi = Math.floor(position / 0x100000000) >>> 0;
    return r;
  }

  private nextBlock(): void {
    philox(this.k0, this.k1, [this.ctrLo, this.ctrHi, 0, 0], this.block);
    this.ctrLo = (this.ctrLo + 1) >>> 0;
    if (this.ctrLo === 0) this.ctrHi = (this.ctrHi + 1) >>> 0;
    this.blockPos = 0;
  }

  /** A uniform 32-bit unsigned integer. */
  nextU32(): number {
    if (this.blockPos >= 4) this.nextBlock();
    return this.block[this.blockPos++]!;
  }

  /** A uniform float in [0, 1) with 24 random bits (float32-exact). */
  nextUniform(): number {
    return (this.nextU32() >>> 8) * 2 ** -24;
  }

  /** A standard normal (Box–Muller; both values of a pair are used). */
  nextNormal(): number {
    if (this.spareNormal !== null) {
      const v = this.spareNormal;
      this.spareNormal = null;
      return v;
    }
    const u1 = ((this.nextU32() >>> 8) + 1) * 2 ** -24; // (0, 1]: log is finite
    const u2 = (this.nextU32() >>> 8) * 2 ** -24;
    const r = Math.sqrt(-2 * Math.log(u1));
    this.spareNormal = r * Math.sin(2 * Math.PI * u2);
    return r * Math.cos(2 * Math.PI * u2);
  }

  /** `n` uniforms in [low, high). */
  uniform(n: number, low = 0, high = 1): Float32Array {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = low + (high - low) * this.nextUniform();
    return out;
  }

  /** `n` normals with the given mean and standard deviation. */
  normal(n: number, mean = 0, std = 1): Float32Array {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = mean + std * this.nextNormal();
    return out;
  }

  /** A uniform integer in [0, n) (rejection sampling, unbiased). */
  int(n: number): number {
    if (!Number.isInteger(n) || n <= 0 || n > 0x100000000)
      throw new Error(`int(n) needs 1 <= n <= 2^32, got ${n}`);
    const limit = 0x100000000 - (0x100000000 % n);
    for (;;) {
      const u = this.nextU32();
      if (u < limit) return u % n;
    }
  }

  /** A uniformly random permutation of 0..n-1 (Fisher–Yates). */
  permutation(n: number): Int32Array {
    const p = new Int32Array(n);
    for (let i = 0; i < n; i++) p[i] = i;
    for (let i = n - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const t = p[i]!;
      p[i] = p[j]!;
      p[j] = t;
    }
    return p;
  }

  /** A new independent generator; advances this one by one block. */
  split(): Rng {
    const out = new Uint32Array(4);
    philox(this.k0, this.k1, [this.ctrLo, this.ctrHi, TAG_SPLIT, 0], out);
    this.ctrLo = (this.ctrLo + 1) >>> 0;
    if (this.ctrLo === 0) this.ctrHi = (this.ctrHi + 1) >>> 0;
    return new Rng([out[0]!, out[1]!]);
  }

  /** A generator for a named (or numbered) sub-stream; does not advance this one. */
  fold(name: string | number): Rng {
    const word = typeof name === "number" ? name >>> 0 : hashString(name);
    const out = new Uint32Array(4);
    philox(this.k0, this.k1, [word, typeof name === "number" ? 0 : 1, TAG_FOLD, 0], out);
    return new Rng([out[0]!, out[1]!]);
  }
}
