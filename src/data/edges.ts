/**
 * Canny's edge detector (J. Canny, "A Computational Approach to Edge Detection", IEEE PAMI 1986) on
 * float images in [0, 1]: the control images of an edge ControlNet, and what edge agreement is
 * measured on (eval/edges.ts).
 *
 *   1. grey = ITU-R 601 luma of RGB (0.299 R + 0.587 G + 0.114 B, as io/raster.ts), or the grey plane
 *   2. Gaussian blur of standard deviation σ (separable, radius ⌈3σ⌉, edge pixels replicated)
 *   3. Sobel gradients gx, gy (3×3, edges replicated), divided by 8 so that the magnitude
 *      |∇| = √(gx² + gy²) is an intensity change per pixel (a ramp of slope s gives s)
 *   4. non-maximum suppression: a pixel stays only if |∇| is a maximum along the gradient direction
 *      (quantised to 0°, 45°, 90°, 135°): edges one pixel thin
 *   5. double threshold with hysteresis: pixels ≥ `high` are edges, and so is every pixel ≥ `low`
 *      8-connected to one through pixels ≥ `low`; weak pixels that touch no strong one are dropped
 *
 * For OpenCV users: cv2.Canny(img8, 100, 200) (no blur, L1 norm of the unscaled Sobel) thresholds
 * roughly |∇| ≈ 0.05 and 0.1 in these units, the defaults here.
 */
import { formatShape, HostTensor } from "../tensor/host.ts";

export interface CannyOptions {
  /** σ of the Gaussian blur in pixels (default 1; 0: no blur). */
  readonly sigma?: number;
  /** Weak-edge threshold on |∇| (intensity per pixel; default 0.05). */
  readonly low?: number;
  /** Strong-edge threshold on |∇| (default 0.1); must be ≥ low. */
  readonly high?: number;
  /** Channels of the edge maps: 1, or 3 (the map repeated, as an RGB control image). Default 1. */
  readonly channels?: 1 | 3;
}

/** A float32 image tensor or a plain `{ data, shape }`. */
export type EdgeImageLike =
  | HostTensor<"float32">
  | { readonly data: Float32Array; readonly shape: readonly number[] };

/** The normalised 1-D Gaussian of standard deviation sigma, radius ⌈3σ⌉. */
function gaussianKernel(sigma: number): Float64Array {
  const r = Math.max(1, Math.ceil(3 * sigma));
  const k = Float64Array.from({ length: 2 * r + 1 }, (_, i) =>
    Math.exp(-((i - r) ** 2) / (2 * sigma * sigma)),
  );
  const s = k.reduce((a, b) => a + b, 0);
  return k.map((v) => v / s);
}

/** Separable blur of an h×w plane (edge pixels replicated). */
function blur(src: Float32Array, h: number, w: number, sigma: number): Float32Array {
  if (sigma === 0) return src;
  const k = gaussianKernel(sigma);
  const r = (k.length - 1) / 2;
  const tmp = new Float32Array(h * w);
  const out = new Float32Array(h * w);
  const clamp = (v: number, n: number) => (v < 0 ? 0 : v >= n ? n - 1 : v);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      let s = 0;
      for (let i = -r; i <= r; i++) s += k[i + r]! * src[y * w + clamp(x + i, w)]!;
      tmp[y * w + x] = s;
    }
  }
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      let s = 0;
      for (let i = -r; i <= r; i++) s += k[i + r]! * tmp[clamp(y + i, h) * w + x]!;
      out[y * w + x] = s;
    }
  }
  return out;
}

/** Sobel gradients of an h×w plane, divided by 8 (per-pixel units), edges replicated. */
export function sobel(src: Float32Array, h: number, w: number): { gx: Float32Array; gy: Float32Array } {
  const gx = new Float32Array(h * w);
  const gy = new Float32Array(h * w);
  const at = (y: number, x: number) =>
    src[Math.min(h - 1, Math.max(0, y)) * w + Math.min(w - 1, Math.max(0, x))]!;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const [a, b, c] = [at(y - 1, x - 1), at(y - 1, x), at(y - 1, x + 1)];
      const [d, f] = [at(y, x - 1), at(y, x + 1)];
      const [g, hh, i] = [at(y + 1, x - 1), at(y + 1, x), at(y + 1, x + 1)];
      gx[y * w + x] = (c + 2 * f + i - (a + 2 * d + g)) / 8;
      gy[y * w + x] = (g + 2 * hh + i - (a + 2 * b + c)) / 8;
    }
  }
  return { gx, gy };
}

const TAN_22_5 = Math.tan(Math.PI / 8);

/** |∇| where it is a maximum along the gradient direction, 0 elsewhere (neighbours outside count as 0). */
export function nonMaximumSuppression(
  gx: Float32Array,
  gy: Float32Array,
  h: number,
  w: number,
): Float32Array {
  const mag = Float32Array.from(gx, (v, i) => Math.hypot(v, gy[i]!));
  const at = (y: number, x: number) => (y < 0 || y >= h || x < 0 || x >= w ? 0 : mag[y * w + x]!);
  const out = new Float32Array(h * w);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const m = mag[y * w + x]!;
      if (m === 0) continue;
      const ax = Math.abs(gx[y * w + x]!);
      const ay = Math.abs(gy[y * w + x]!);
      let dy: number;
      let dx: number;
      if (ay <= TAN_22_5 * ax)
        [dy, dx] = [0, 1]; // gradient ≈ horizontal: compare left and right
      else if (ax <= TAN_22_5 * ay)
        [dy, dx] = [1, 0]; // ≈ vertical: above and below
      else [dy, dx] = gx[y * w + x]! * gy[y * w + x]! > 0 ? [1, 1] : [1, -1]; // diagonals (y grows down)
      // strict on one side, not the other: a two-pixel plateau keeps one pixel (as OpenCV)
      if (m > at(y - dy, x - dx) && m >= at(y + dy, x + dx)) out[y * w + x] = m;
    }
  }
  return out;
}

/**
 * Double threshold with hysteresis over an h×w magnitude plane: 1 where |∇| ≥ high, or ≥ low and
 * 8-connected through pixels ≥ low to one ≥ high; 0 elsewhere.
 */
export function hysteresis(mag: Float32Array, h: number, w: number, low: number, high: number): Uint8Array {
  const out = new Uint8Array(h * w);
  const stack: number[] = [];
  for (let i = 0; i < h * w; i++) {
    if (mag[i]! >= high && mag[i]! > 0) {
      out[i] = 1;
      stack.push(i);
    }
  }
  while (stack.length > 0) {
    const i = stack.pop()!;
    const y = Math.floor(i / w);
    const x = i % w;
    for (let dy = -1; dy <= 1; dy++) {
      for (let dx = -1; dx <= 1; dx++) {
        const yy = y + dy;
        const xx = x + dx;
        if (yy < 0 || yy >= h || xx < 0 || xx >= w) continue;
        const j = yy * w + xx;
        if (out[j] === 0 && mag[j]! >= low && mag[j]! > 0) {
          out[j] = 1;
          stack.push(j);
        }
      }
    }
  }
  return out;
}

/** Canny on one grey h×w plane: 1 on edges, 0 elsewhere. */
export function cannyPlane(grey: Float32Array, h: number, w: number, opts: CannyOptions = {}): Uint8Array {
  const { sigma, low, high } = checkOptions(opts);
  const { gx, gy } = sobel(blur(grey, h, w, sigma), h, w);
  return hysteresis(nonMaximumSuppression(gx, gy, h, w), h, w, low, high);
}

function checkOptions(opts: CannyOptions): { sigma: number; low: number; high: number } {
  const sigma = opts.sigma ?? 1;
  const low = opts.low ?? 0.05;
  const high = opts.high ?? 0.1;
  if (!(sigma >= 0) || !Number.isFinite(sigma)) throw new Error(`canny: sigma must be ≥ 0, got ${sigma}`);
  if (!(low > 0) || !(high >= low) || !Number.isFinite(high)) {
    throw new Error(`canny: thresholds must satisfy 0 < low ≤ high, got low ${low}, high ${high}`);
  }
  return { sigma, low, high };
}

/**
 * Binary edge maps of images in [0, 1]: [C, H, W] → [channels, H, W], or [N, C, H, W] →
 * [N, channels, H, W], with C 1 (grey) or 3 (RGB); 1 on edges, 0 elsewhere (float32).
 */
export function canny(images: EdgeImageLike, opts: CannyOptions = {}): HostTensor<"float32"> {
  const shape = images.shape;
  if (shape.length !== 3 && shape.length !== 4) {
    throw new Error(`canny: images must be [C, H, W] or [N, C, H, W], got ${formatShape(shape)}`);
  }
  const [n, c, h, w] = (shape.length === 3 ? [1, ...shape] : shape) as [number, number, number, number];
  if (c !== 1 && c !== 3) {
    throw new Error(
      `canny: images must have 1 (grey) or 3 (RGB) channels, got ${c} in ${formatShape(shape)}`,
    );
  }
  if (images.data.length !== n * c * h * w) {
    throw new Error(`canny: ${formatShape(shape)} needs ${n * c * h * w} values, got ${images.data.length}`);
  }
  const channels = opts.channels ?? 1;
  checkOptions(opts);
  const src = images.data;
  const plane = h * w;
  const out = new Float32Array(n * channels * plane);
  for (let b = 0; b < n; b++) {
    const base = b * c * plane;
    const grey =
      c === 1
        ? src.subarray(base, base + plane)
        : Float32Array.from(
            { length: plane },
            (_, i) =>
              0.299 * src[base + i]! + 0.587 * src[base + plane + i]! + 0.114 * src[base + 2 * plane + i]!,
          );
    const edges = cannyPlane(grey, h, w, opts);
    for (let k = 0; k < channels; k++) out.set(edges, (b * channels + k) * plane);
  }
  return new HostTensor(out, shape.length === 3 ? [channels, h, w] : [n, channels, h, w]);
}
