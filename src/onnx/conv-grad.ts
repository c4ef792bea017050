/**
 * ONNX lowerings of the two convolution gradients, for y = conv(x, W) with g = ∂L/∂y:
 *
 *   dx = convᵀ(g, W)              (the input gradient; primitive `convTranspose`)
 *   dW[o, c, i, j] = Σ_{n, h, w} g[n, o, h, w] · x̃[n, c, h·sh + i·dh, w·sw + j·dw]
 *                                 (the weight gradient; primitive `convWeightGrad`, x̃ = padded x)
 *
 * dx at stride 1 is one Conv of g with the flipped, transposed kernel (faster in ONNX Runtime than
 * ConvTranspose, which stays for strides > 1, groups and inputs of fewer than 8 channels).
 *
 * ONNX has no weight-gradient operator. dW is a matrix product over K = N·Ho·Wo once the kh·kw
 * shifted views of x̃ (the "im2col" columns) are laid out; the strategies differ in how the columns
 * are built and in the shape of the product, which matters as much: ONNX Runtime's GEMM packs its
 * right operand, so a product whose right operand is the large column matrix and whose left one has
 * few rows (O) runs ~25% below the GEMM's speed with the roles swapped.
 *
 * - `im2col-matmul`: NCHW columns [N, C·kk, Ho·Wo] from kk Slices and a Concat, one MatMul per
 *   sample with g [N, O, Ho·Wo], ReduceSum over N.
 * - `conv-batch-transposed`: a Conv over batch-transposed tensors (x [C, N, H, W] convolved with
 *   g [O, N, Ho, Wo] as the kernel, the batch as the reduction): no columns, but the Conv's inner
 *   GEMM then has only kh·kw output columns and runs far from peak.
 * - `gather-matmul`: NHWC columns [N, Ho·Wo, kk·C] from ONE Gather of C-float rows of the padded
 *   NHWC image (instead of kk Slices and a Concat, which copy the columns twice), one MatMul per
 *   sample, ReduceSum over N.
 * - `gather-gemm`: the same columns as one [N·Ho·Wo, kk·C] matrix against g transposed to
 *   [O, N·Ho·Wo]: one product with K = N·Ho·Wo (better than per-sample products when Ho·Wo is small).
 * - `split-gather`: the taps split between the operands — row shifts gathered from x, column shifts
 *   from g — so each operand is only kh (kw) times its tensor and the product is [C·kh, K] · [K, kw·O]:
 *   the fastest when O is small or below C.
 *
 * Which one runs, and whether its columns are built a batch slice at a time, are passes
 * (passes/weight-grad.ts: "convWeightGrad", "weightGradSlices").
 */
import type { ConvAttrs } from "../tensor/primitives.ts";
import type { Node } from "../tensor/symbolic.ts";
import type { LowerCtx } from "./context.ts";
import { blockedConv, blockedWeight, canBlock } from "./passes/nchwc.ts";
import type { ConcreteWeightGrad } from "./passes/options.ts";
import { batchChunks, chooseWeightGrad, type Dims } from "./passes/weight-grad.ts";
import type { OnnxAttr } from "./proto.ts";

const ints = (value: readonly number[]): OnnxAttr => ({ kind: "ints", value });
const int = (value: number): OnnxAttr => ({ kind: "int", value });

/** Input gradient of a convolution: dx for y = conv(x, w), given g = dy. */
export function lowerConvTranspose(n: Node<"convTranspose">, c: LowerCtx): void {
  const a = n.attrs;
  const [g, w] = c.ins as [string, string];
  const wShape = n.inputs[1]!.shape as [number, number, number, number];
  const [kh, kw] = [wShape[2], wShape[3]];
  const [H, W] = [a.outShape[2]!, a.outShape[3]!];
  const [Ho, Wo] = [n.inputs[0]!.shape[2]!, n.inputs[0]!.shape[3]!];
  const fullH = a.dilations[0] * (kh - 1);
  const fullW = a.dilations[1] * (kw - 1);
  const flippedPads = [fullH - a.pads[0], fullW - a.pads[1], fullH - a.pads[2], fullW - a.pads[3]];
  const C = a.outShape[1]!;
  const stride1 = a.strides[0] === 1 && a.strides[1] === 1;
  if (stride1 && a.group === 1 && C >= 8 && flippedPads.every((p) => p >= 0)) {
    // stride 1: dx = conv(g, flip(wᵀ)) with "full" padding — one Conv, faster than ConvTranspose
    // unless x has few channels: they are the rows of that Conv's GEMM (1 or 3 rows: 2–3× slower)
    const conv = { strides: [1, 1], pads: flippedPads, dilations: a.dilations };
    const O = wShape[0];
    const B = c.passes.nchwc;
    if (canBlock(c, O, C) && O % B === 0 && C % B === 0) {
      // the flipped, transposed kernel straight into the blocked layout
      const wb = blockedWeight(c, w, wShape, true);
      blockedConv(c, g, wb, [C, O, kh, kw], conv, c.out, undefined, wb);
      return;
    }
    const wt = c.tmp("wT");
    c.emit("Transpose", [w], [wt], { perm: ints([1, 0, 2, 3]) });
    const wf = c.tmp("wflip");
    c.emit(
      "Slice",
      [wt, c.i64([-1, -1]), c.i64([-(kh + 1), -(kw + 1)]), c.i64([2, 3]), c.i64([-1, -1])],
      [wf],
    );
    if (canBlock(c, O, C)) blockedConv(c, g, wf, [C, O, kh, kw], conv, c.out);
    else
      c.emit("Conv", [g, wf], [c.out], {
        strides: ints(conv.strides),
        pads: ints(conv.pads),
        dilations: ints(conv.dilations),
        group: int(1),
      });
    return;
  }
  const natH = (Ho - 1) * a.strides[0] + fullH + 1 - a.pads[0] - a.pads[2];
  const natW = (Wo - 1) * a.strides[1] + fullW + 1 - a.pads[1] - a.pads[3];
  c.emit("ConvTranspose", [g, w], [c.out], {
    strides: ints(a.strides),
    pads: ints(a.pads),
    dilations: ints(a.dilations),
    group: int(a.group),
    output_padding: ints([H - natH, W - natW]),
  });
}

/** Zero-pads the two spatial axes (at positions `hw` of a rank-4 tensor) by the conv's pads. */
function padSpatial(c: LowerCtx, x: string, a: ConvAttrs, hw: readonly [number, number]): string {
  if (a.pads.every((p) => p === 0)) return x;
  const pads = new Array<number>(8).fill(0);
  pads[hw[0]] = a.pads[0];
  pads[hw[1]] = a.pads[1];
  pads[4 + hw[0]] = a.pads[2];
  pads[4 + hw[1]] = a.pads[3];
  const xp = c.tmp("xpad");
  c.emit("Pad", [x, c.i64(pads)], [xp], { mode: { kind: "string", value: "constant" } });
  return xp;
}

/** The kh·kw shifted (strided, dilated) Ho × Wo views of the padded x, row-major over (i, j). */
function shiftedViews(
  c: LowerCtx,
  xp: string,
  d: Dims,
  a: ConvAttrs,
  hw: readonly [number, number],
): string[] {
  const views: string[] = [];
  for (let i = 0; i < d.kh; i++) {
    for (let j = 0; j < d.kw; j++) {
      const h0 = i * a.dilations[0];
      const w0 = j * a.dilations[1];
      const s = c.tmp("shift");
      c.emit(
        "Slice",
        [
          xp,
          c.i64([h0, w0]),
          c.i64([h0 + a.strides[0] * (d.Ho - 1) + 1, w0 + a.strides[1] * (d.Wo - 1) + 1]),
          c.i64([hw[0], hw[1]]),
          c.i64([a.strides[0], a.strides[1]]),
        ],
        [s],
      );
      views.push(s);
    }
  }
  return views;
}

/** Concat that tolerates a single piece. */
function concat(c: LowerCtx, pieces: readonly string[], axis: number, hint: string): string {
  if (pieces.length === 1) return pieces[0]!;
  const out = c.tmp(hint);
  c.emit("Concat", pieces, [out], { axis: int(axis) });
  return out;
}

function reshape(c: LowerCtx, x: string, shape: readonly number[], hint: string, out?: string): string {
  const r = out ?? c.tmp(hint);
  c.emit("Reshape", [x, c.i64(shape)], [r]);
  return r;
}

function transpose(c: LowerCtx, x: string, perm: readonly number[], hint: string, out?: string): string {
  const r = out ?? c.tmp(hint);
  c.emit("Transpose", [x], [r], { perm: ints(perm) });
  return r;
}

/** NCHW columns [N, C·kk, Ho·Wo] → per-sample MatMul with g [N, O, Ho·Wo] → ReduceSum over N. */
function im2colMatmul(c: LowerCtx, x: string, g: string, d: Dims, a: ConvAttrs, out: string): void {
  const hw = d.Ho * d.Wo;
  const kk = d.kh * d.kw;
  const views = shiftedViews(c, padSpatial(c, x, a, [2, 3]), d, a, [2, 3]).map((v) =>
    reshape(c, v, [d.N, d.C, 1, hw], "colr"),
  );
  const cols = reshape(c, concat(c, views, 2, "cols"), [d.N, d.C * kk, hw], "cols3");
  const colsT = transpose(c, cols, [0, 2, 1], "colsT");
  const prod = c.tmp("dWn");
  c.emit("MatMul", [reshape(c, g, [d.N, d.O, hw], "g3"), colsT], [prod]);
  const dw = c.tmp("dW2");
  c.emit("ReduceSum", [prod, c.i64([0])], [dw], { keepdims: int(0) });
  reshape(c, dw, [d.O, d.C, d.kh, d.kw], "dW", out);
}

/** A Conv over batch-transposed tensors: the batch becomes the reduction axis of the Conv. */
function batchConv(c: LowerCtx, x: string, g: string, d: Dims, a: ConvAttrs, out: string): void {
  const r = c.tmp("dWT");
  c.emit("Conv", [transpose(c, x, [1, 0, 2, 3], "xT"), transpose(c, g, [1, 0, 2, 3], "gT")], [r], {
    strides: ints(a.dilations),
    dilations: ints(a.strides),
    pads: ints(a.pads),
    group: int(1),
  });
  // the Conv may produce more taps than the kernel has when the strides leave spare rows
  const fh = Math.floor((d.H + a.pads[0] + a.pads[2] - a.strides[0] * (d.Ho - 1) - 1) / a.dilations[0]) + 1;
  const fw = Math.floor((d.W + a.pads[1] + a.pads[3] - a.strides[1] * (d.Wo - 1) - 1) / a.dilations[1]) + 1;
  let rr = r;
  if (fh !== d.kh || fw !== d.kw) {
    rr = c.tmp("dWTs");
    c.emit("Slice", [r, c.i64([0, 0]), c.i64([d.kh, d.kw]), c.i64([2, 3])], [rr]);
  }
  transpose(c, rr, [1, 0, 2, 3], "dW", out);
}

/** [O, kh, kw, C] (the NHWC column order) → [O, C, kh, kw]. */
function fromOkkC(c: LowerCtx, dw: string, d: Dims, out: string): void {
  transpose(c, reshape(c, dw, [d.O, d.kh, d.kw, d.C], "dWk"), [0, 3, 1, 2], "dW", out);
}

/**
 * NHWC columns [N, Ho·Wo, kk·C] by ONE Gather along the flattened padded image (rows of C floats),
 * instead of kk Slices and a Concat that copy the columns twice.
 */
function gatherColumns(c: LowerCtx, x: string, d: Dims, a: ConvAttrs): string {
  const xp = padSpatial(c, transpose(c, x, [0, 2, 3, 1], "xNHWC"), a, [1, 2]); // [N, H', W', C]
  const Hp = d.H + a.pads[0] + a.pads[2];
  const Wp = d.W + a.pads[1] + a.pads[3];
  const rows = reshape(c, xp, [d.N, Hp * Wp, d.C], "xrows");
  const idx: number[] = [];
  for (let h = 0; h < d.Ho; h++) {
    for (let w = 0; w < d.Wo; w++) {
      for (let i = 0; i < d.kh; i++) {
        for (let j = 0; j < d.kw; j++) {
          idx.push((h * a.strides[0] + i * a.dilations[0]) * Wp + w * a.strides[1] + j * a.dilations[1]);
        }
      }
    }
  }
  const cols = c.tmp("cols");
  c.emit("Gather", [rows, c.i64(idx)], [cols], { axis: int(1) }); // [N, Ho·Wo·kk, C]
  return reshape(c, cols, [d.N, d.Ho * d.Wo, d.kh * d.kw * d.C], "cols3");
}

/** Gathered NHWC columns; per-sample MatMul with g [N, O, Ho·Wo]; ReduceSum over N. */
function gatherMatmul(c: LowerCtx, x: string, g: string, d: Dims, a: ConvAttrs, out: string): void {
  const prod = c.tmp("dWn");
  c.emit("MatMul", [reshape(c, g, [d.N, d.O, d.Ho * d.Wo], "g3"), gatherColumns(c, x, d, a)], [prod]);
  const dw = c.tmp("dW2");
  c.emit("ReduceSum", [prod, c.i64([0])], [dw], { keepdims: int(0) });
  fromOkkC(c, dw, d, out);
}

/** Gathered NHWC columns as one [N·Ho·Wo, kk·C] matrix; one MatMul with g transposed to [O, N·Ho·Wo]. */
function gatherGemm(c: LowerCtx, x: string, g: string, d: Dims, a: ConvAttrs, out: string): void {
  const K = d.N * d.Ho * d.Wo;
  const cols = reshape(c, gatherColumns(c, x, d, a), [K, d.kh * d.kw * d.C], "cols2");
  const gT = reshape(c, transpose(c, g, [1, 0, 2, 3], "gT"), [d.O, K], "gT2");
  const dw = c.tmp("dW2");
  c.emit("MatMul", [gT, cols], [dw]);
  fromOkkC(c, dw, d, out);
}

/**
 * The taps split between the two operands of ONE MatMul: the kh row shifts are gathered from x, the
 * kw column shifts from g, over K = (Ho, N, W') with W' the padded width:
 *
 *   A[(c, i), (h, n, w')] = x̃[n, c, h·sh + i·dh, w']                       [C·kh, Ho·N·W']
 *   B[(h, n, w'), (j, o)] = g[n, o, h, (w' − j·dw)/sw]  (0 where not a tap) [Ho·N·W', kw·O]
 *   (A·B)[(c, i), (j, o)] = dW[o, c, i, j]
 *
 * Each operand is kh (kw) times its tensor instead of kh·kw times, both come from one Gather of long
 * rows, and the product is square-ish; the price is the W'/Wo extra columns of K (zeros of B).
 */
function splitGather(c: LowerCtx, x: string, g: string, d: Dims, a: ConvAttrs, out: string): void {
  const Hp = d.H + a.pads[0] + a.pads[2];
  const Wp = d.W + a.pads[1] + a.pads[3];
  const xp = padSpatial(c, transpose(c, x, [1, 2, 0, 3], "xT"), a, [1, 3]); // [C, H', N, W']
  const rowsIdx: number[] = [];
  for (let i = 0; i < d.kh; i++)
    for (let h = 0; h < d.Ho; h++) rowsIdx.push(h * a.strides[0] + i * a.dilations[0]);
  const A3 = c.tmp("A3");
  c.emit("Gather", [reshape(c, xp, [d.C, Hp, d.N * Wp], "xrows"), c.i64(rowsIdx)], [A3], { axis: int(1) });
  const A = reshape(c, A3, [d.C * d.kh, d.Ho * d.N * Wp], "A"); // [C·kh, Ho·N·W']
  // g as [Ho·N, Wo + 1, O] with a zero column at Wo, then column w' of tap j picks (w' − j·dw)/sw or zero
  // [N, O, Ho, Wo] → [Ho, N, Wo, O] in two moves ONNX Runtime copies fast (one axis, then whole rows)
  const gNhwc = reshape(c, transpose(c, g, [0, 2, 3, 1], "gNHWC"), [d.N, d.Ho, d.Wo * d.O], "gN3");
  const gT = reshape(c, transpose(c, gNhwc, [1, 0, 2], "gT"), [d.Ho * d.N, d.Wo, d.O], "gT3");
  const gz = c.tmp("gz");
  c.emit("Pad", [gT, c.i64([0, 0, 0, 0, 1, 0])], [gz], { mode: { kind: "string", value: "constant" } });
  const colsIdx: number[] = [];
  for (let w = 0; w < Wp; w++) {
    for (let j = 0; j < d.kw; j++) {
      const q = w - j * a.dilations[1];
      const ok = q >= 0 && q % a.strides[1] === 0 && q / a.strides[1] < d.Wo;
      colsIdx.push(ok ? q / a.strides[1] : d.Wo);
    }
  }
  const B3 = c.tmp("B3");
  c.emit("Gather", [gz, c.i64(colsIdx)], [B3], { axis: int(1) }); // [Ho·N, W'·kw, O]
  const B = reshape(c, B3, [d.Ho * d.N * Wp, d.kw * d.O], "B");
  const P = c.tmp("P");
  c.emit("MatMul", [A, B], [P]); // [C·kh, kw·O]
  transpose(c, reshape(c, P, [d.C, d.kh, d.kw, d.O], "P4"), [3, 0, 1, 2], "dW", out);
}

const STRATEGIES: Record<
  ConcreteWeightGrad,
  (c: LowerCtx, x: string, g: string, d: Dims, a: ConvAttrs, out: string) => void
> = {
  "im2col-matmul": im2colMatmul,
  "conv-batch-transposed": batchConv,
  "gather-matmul": gatherMatmul,
  "gather-gemm": gatherGemm,
  "split-gather": splitGather,
};

/** Weight gradient of a convolution; grouped convolutions run one product per group. */
export function lowerWeightGrad(n: Node<"convWeightGrad">, c: LowerCtx): void {
  const a = n.attrs;
  const strategy = chooseWeightGrad(c.passes.convWeightGrad, n);
  const lower = STRATEGIES[strategy];
  const [N, C, H, W] = n.inputs[0]!.shape as [number, number, number, number];
  const [, O, Ho, Wo] = n.inputs[1]!.shape as [number, number, number, number];
  const [, , kh, kw] = a.wShape as [number, number, number, number];
  const G = a.group;
  const d: Dims = { N, C: C / G, H, W, O: O / G, Ho, Wo, kh, kw };
  const [x, g] = c.ins as [string, string];
  if (G === 1) {
    const k = c.passes.weightGradSlices ? batchChunks(strategy, d, a) : 1;
    if (k === 1) {
      lower(c, x, g, d, a, c.out);
      return;
    }
    // the batch in k slices, each with its own columns: only one slice's columns exist at a time
    const m = N / k;
    const parts: string[] = [];
    for (let i = 0; i < k; i++) {
      const [xs, gs, p] = [c.tmp("x_part"), c.tmp("g_part"), c.tmp("dW_part")];
      c.emit("Slice", [x, c.i64([i * m]), c.i64([(i + 1) * m]), c.i64([0])], [xs]);
      c.emit("Slice", [g, c.i64([i * m]), c.i64([(i + 1) * m]), c.i64([0])], [gs]);
      lower(c, xs, gs, { ...d, N: m }, a, p);
      parts.push(p);
    }
    c.emit("Sum", parts, [c.out]);
    return;
  }
  const parts: string[] = [];
  for (let k = 0; k < G; k++) {
    const xs = c.tmp("xg");
    c.emit("Slice", [x, c.i64([k * d.C]), c.i64([(k + 1) * d.C]), c.i64([1])], [xs]);
    const gs = c.tmp("gg");
    c.emit("Slice", [g, c.i64([k * d.O]), c.i64([(k + 1) * d.O]), c.i64([1])], [gs]);
    const p = c.tmp("dWg");
    lower(c, xs, gs, d, a, p);
    parts.push(p);
  }
  c.emit("Concat", parts, [c.out], { axis: int(0) });
}
