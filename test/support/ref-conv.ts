/**
 * Float64 reference for the convolution family, written from the definition of a 2-D convolution
 * (cross-correlation, as PyTorch and ONNX compute it):
 *
 *   y[n, o, i, j] = b[o] + Σ_{c, ki, kj} x[n, g·C/G + c, i·sh − pt + ki·dh, j·sw − pl + kj·dw] · w[o, c, ki, kj]
 *
 * where g = ⌊o / (O/G)⌋ is the group of output channel o and positions outside x read zero.
 * `convTranspose` and `convWeightGrad` are not separate formulas: they are the adjoints of this map
 * with respect to x and w, computed by visiting the same (x, w, y) index triples and scattering.
 */
import type { ConvAttrs } from "../../src/tensor/primitives.ts";
import { type RefTensor, refZeros } from "./ref-core.ts";

/** Output shape of the convolution (the ONNX / PyTorch formula). */
export function convOutShape(
  xShape: readonly number[],
  wShape: readonly number[],
  a: ConvAttrs,
): [number, number, number, number] {
  const [n, , h, w] = xShape as [number, number, number, number];
  const [o, , kh, kw] = wShape as [number, number, number, number];
  const oh = Math.floor((h + a.pads[0] + a.pads[2] - a.dilations[0] * (kh - 1) - 1) / a.strides[0]) + 1;
  const ow = Math.floor((w + a.pads[1] + a.pads[3] - a.dilations[1] * (kw - 1) - 1) / a.strides[1]) + 1;
  return [n, o, oh, ow];
}

/**
 * Calls `visit(xi, wi, yi)` for every product x[xi]·w[wi] that contributes to y[yi], with flat
 * row-major offsets. This is the whole definition of the convolution; the three functions below
 * only decide which of the three arrays is the result.
 */
function forEachTap(
  xShape: readonly number[],
  wShape: readonly number[],
  a: ConvAttrs,
  visit: (xi: number, wi: number, yi: number) => void,
): void {
  const [N, C, H, W] = xShape as [number, number, number, number];
  const [O, Cg, KH, KW] = wShape as [number, number, number, number];
  const [, , OH, OW] = convOutShape(xShape, wShape, a);
  const Og = O / a.group;
  if (Cg * a.group !== C || !Number.isInteger(Og)) throw new Error("ref conv: channels do not match groups");
  for (let n = 0; n < N; n++) {
    for (let o = 0; o < O; o++) {
      const grp = Math.floor(o / Og);
      for (let i = 0; i < OH; i++) {
        for (let j = 0; j < OW; j++) {
          const yi = ((n * O + o) * OH + i) * OW + j;
          for (let c = 0; c < Cg; c++) {
            const xc = grp * Cg + c;
            for (let ki = 0; ki < KH; ki++) {
              const h = i * a.strides[0] - a.pads[0] + ki * a.dilations[0];
              if (h < 0 || h >= H) continue;
              for (let kj = 0; kj < KW; kj++) {
                const w = j * a.strides[1] - a.pads[1] + kj * a.dilations[1];
                if (w < 0 || w >= W) continue;
                visit(((n * C + xc) * H + h) * W + w, ((o * Cg + c) * KH + ki) * KW + kj, yi);
              }
            }
          }
        }
      }
    }
  }
}

/** y = conv(x, w) + b */
export function refConv(x: RefTensor, w: RefTensor, b: RefTensor | undefined, a: ConvAttrs): RefTensor {
  const y = refZeros(convOutShape(x.shape, w.shape, a), "float32");
  const [, O, OH, OW] = y.shape as [number, number, number, number];
  if (b) for (let k = 0; k < y.data.length; k++) y.data[k] = b.data[Math.floor(k / (OH * OW)) % O]!;
  forEachTap(x.shape, w.shape, a, (xi, wi, yi) => {
    y.data[yi]! += x.data[xi]! * w.data[wi]!;
  });
  return y;
}

/** dx = ∂⟨g, conv(x, w)⟩/∂x for x of shape `outShape`: the adjoint of x ↦ conv(x, w). */
export function refConvTranspose(
  g: RefTensor,
  w: RefTensor,
  a: ConvAttrs,
  outShape: readonly number[],
): RefTensor {
  const dx = refZeros(outShape, "float32");
  forEachTap(outShape, w.shape, a, (xi, wi, yi) => {
    dx.data[xi]! += g.data[yi]! * w.data[wi]!;
  });
  return dx;
}

/** dW = ∂⟨g, conv(x, w)⟩/∂w for w of shape `wShape`: the adjoint of w ↦ conv(x, w). */
export function refConvWeightGrad(
  x: RefTensor,
  g: RefTensor,
  a: ConvAttrs,
  wShape: readonly number[],
): RefTensor {
  const dw = refZeros(wShape, "float32");
  forEachTap(x.shape, wShape, a, (xi, wi, yi) => {
    dw.data[wi]! += g.data[yi]! * x.data[xi]!;
  });
  return dw;
}
