/**
 * Random distortions of digits for training the judge (Simard, Steinkraus & Platt 2003, "Best
 * practices for convolutional neural networks applied to visual document analysis": distortions
 * are the largest single win on MNIST). Per image:
 *
 * - an affine map: rotation θ, scale s and shift d drawn uniformly within the bounds, about the
 *   image centre c;
 * - an elastic displacement field Δ: uniform noise in [−1, 1] per pixel and axis, smoothed by a
 *   Gaussian of width σ and scaled by α.
 *
 * Output pixel p reads the input at q = R(−θ)(p + Δ(p) − c − d)/s + c, by bilinear interpolation
 * with a constant outside the image (0 by default: MNIST's black; 1 for images on white).
 */
import { HostTensor } from "../tensor/host.ts";
import type { Rng } from "../tensor/rng.ts";

export interface Distortion {
  /** Largest rotation in degrees. */
  readonly degrees: number;
  /** Largest relative change of scale (0.1: s in [0.9, 1.1]). */
  readonly scale: number;
  /** Largest shift in pixels along each axis. */
  readonly shift: number;
  /** Elastic strength α in pixels (0: none) and smoothing width σ in pixels. */
  readonly elasticAlpha: number;
  readonly elasticSigma: number;
}

export const defaultDistortion: Distortion = {
  degrees: 12,
  scale: 0.1,
  shift: 2,
  elasticAlpha: 30,
  elasticSigma: 4,
};

/** Normalized 1-D Gaussian kernel of width σ, radius ⌈3σ⌉. */
function gaussianKernel(sigma: number): Float64Array {
  const r = Math.ceil(3 * sigma);
  const k = new Float64Array(2 * r + 1);
  let sum = 0;
  for (let i = -r; i <= r; i++) {
    k[i + r] = Math.exp(-(i * i) / (2 * sigma * sigma));
    sum += k[i + r]!;
  }
  return k.map((v) => v / sum);
}

/**
 * A fast 32-bit generator (mulberry32) for the elastic noise: thousands of draws per image, where
 * the Philox stream would dominate a training step. Each image seeds one from the Philox stream, so
 * runs stay reproducible from the seed.
 */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Fills `out` with α · (G_σ ∗ U(−1, 1)) over an h×w grid: separable blur, zero padding. */
function elasticField(
  out: Float64Array,
  tmp: Float64Array,
  h: number,
  w: number,
  kernel: Float64Array,
  alpha: number,
  uniform: () => number,
): void {
  const r = (kernel.length - 1) / 2;
  for (let i = 0; i < h * w; i++) out[i] = 2 * uniform() - 1;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const lo = x - r < 0 ? -x : -r;
      const hi = x + r > w - 1 ? w - 1 - x : r;
      let acc = 0;
      for (let j = lo; j <= hi; j++) acc += kernel[j + r]! * out[y * w + x + j]!;
      tmp[y * w + x] = acc;
    }
  }
  for (let y = 0; y < h; y++) {
    const lo = y - r < 0 ? -y : -r;
    const hi = y + r > h - 1 ? h - 1 - y : r;
    for (let x = 0; x < w; x++) {
      let acc = 0;
      for (let j = lo; j <= hi; j++) acc += kernel[j + r]! * tmp[(y + j) * w + x]!;
      out[y * w + x] = alpha * acc;
    }
  }
}

/** Distorts each image of [B,C,H,W] with its own random draw; pixels outside the image read `fill`. */
export function randomDistort(
  images: HostTensor<"float32">,
  d: Distortion,
  rng: Rng,
  fill = 0,
): HostTensor<"float32"> {
  const [b, c, h, w] = images.shape as [number, number, number, number];
  const src = images.data;
  const out = new Float32Array(src.length).fill(fill);
  const cy = (h - 1) / 2;
  const cx = (w - 1) / 2;
  const kernel = d.elasticAlpha > 0 ? gaussianKernel(d.elasticSigma) : null;
  const fieldY = new Float64Array(h * w);
  const fieldX = new Float64Array(h * w);
  const tmp = new Float64Array(h * w);
  const u = () => 2 * rng.nextUniform() - 1; // U(−1, 1)
  for (let i = 0; i < b; i++) {
    const theta = (u() * d.degrees * Math.PI) / 180;
    const s = 1 + u() * d.scale;
    const dy = u() * d.shift;
    const dx = u() * d.shift;
    if (kernel) {
      const noise = mulberry32(rng.nextU32());
      elasticField(fieldY, tmp, h, w, kernel, d.elasticAlpha, noise);
      elasticField(fieldX, tmp, h, w, kernel, d.elasticAlpha, noise);
    }
    const cos = Math.cos(theta) / s;
    const sin = Math.sin(theta) / s;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const py = y + fieldY[y * w + x]! - cy - dy;
        const px = x + fieldX[y * w + x]! - cx - dx;
        const sy = cos * py - sin * px + cy;
        const sx = sin * py + cos * px + cx;
        const y0 = Math.floor(sy);
        const x0 = Math.floor(sx);
        if (y0 < -1 || y0 >= h || x0 < -1 || x0 >= w) continue; // all four taps outside: fill
        const fy = sy - y0;
        const fx = sx - x0;
        // bilinear weights of the taps (y0, x0), (y0, x0+1), (y0+1, x0), (y0+1, x0+1); `fill` outside
        const inY0 = y0 >= 0;
        const inY1 = y0 + 1 < h;
        const inX0 = x0 >= 0;
        const inX1 = x0 + 1 < w;
        for (let ch = 0; ch < c; ch++) {
          const base = (i * c + ch) * h * w;
          const r0 = base + y0 * w + x0;
          const r1 = r0 + w;
          const top = (1 - fx) * (inY0 && inX0 ? src[r0]! : fill) + fx * (inY0 && inX1 ? src[r0 + 1]! : fill);
          const bottom =
            (1 - fx) * (inY1 && inX0 ? src[r1]! : fill) + fx * (inY1 && inX1 ? src[r1 + 1]! : fill);
          out[base + y * w + x] = (1 - fy) * top + fy * bottom;
        }
      }
    }
  }
  return new HostTensor(out, images.shape);
}
