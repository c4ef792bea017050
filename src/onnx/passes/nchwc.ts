/**
 * The "nchwc" pass: convolutions in ONNX Runtime's blocked channel layout (NCHWc), with weights that
 * are graph values (the lowerings of conv and of its input gradient call these where
 * `passes.nchwc` gives a block size).
 *
 * ONNX Runtime's CPU provider has a faster convolution kernel for tensors whose channels are stored
 * in blocks of B (8 with AVX2, 16 with AVX-512): [N, C/B, H, W, B]. Its own graph optimizer uses it
 * only for convolutions whose weights are constants (it reorders them once when the session opens),
 * so in a training step — weights are inputs — every convolution ran in the plain layout. The
 * blocked kernel takes its weight as an ordinary input, so the engine emits the layout change
 * itself: the weight is reordered in the graph (`blockedWeight`: two transposes, small next to the
 * convolution), the input is reordered into blocks and the output back. It pays even with the
 * reorders, for single convolutions and for the whole train step (docs/benchmarks.md, "NCHWc").
 *
 * Only the CPU provider has these operators: `compileGraph` turns this on only for CPU sessions and
 * asks ONNX Runtime for B (`nchwcBlockSize` in runtime/session.ts), never guesses it. Exported
 * models (`emitOnnx`) contain them only when asked to.
 */
import { sameShape } from "../../tensor/host.ts";
import type { LowerCtx } from "../context.ts";
import type { OnnxAttr } from "../proto.ts";

export const NCHWC_DOMAIN = "com.microsoft.nchwc";

export const ints = (value: readonly number[]): OnnxAttr => ({ kind: "ints", value });
export const int = (value: number): OnnxAttr => ({ kind: "int", value });

/** Whether two shapes are given and equal. */
export const same = (a: readonly number[] | undefined, b: readonly number[] | undefined): boolean =>
  !!a && !!b && sameShape(a, b);

/** Attributes of a depthwise (groups = channels) kh × kw convolution, stride 1, no padding. */
export function depthwise(groups: number, kh: number, kw: number): Record<string, OnnxAttr> {
  return {
    kernel_shape: ints([kh, kw]),
    strides: ints([1, 1]),
    pads: ints([0, 0, 0, 0]),
    dilations: ints([1, 1]),
    group: int(groups),
  };
}

export interface Conv2d {
  strides: readonly number[];
  pads: readonly number[];
  dilations: readonly number[];
}

/**
 * Whether a group-1 2-D convolution of C input and O output channels can run blocked: C a multiple
 * of B, or fewer than B (the kernel then reads the input in the plain layout, as for an image's
 * first convolution); O any count (the weight is padded with zero filters to whole blocks).
 */
export function canBlock(c: LowerCtx, C: number, O: number): boolean {
  const b = c.passes.nchwc;
  return b > 0 && C > 0 && O > 0 && (C % b === 0 || C < b);
}

/**
 * The kernel's filter layout [O/B, C/B, kh, kw, B_in, B_out] (as [O, C, kh, kw]) of w [O, C, kh, kw]
 * with O and C whole blocks; with `flip`, of flip(wᵀ) instead — the kernel of the input gradient,
 * [C/B, O/B, kh, kw, B_o, B_c] with the taps reversed (as [C, O, kh, kw]). Two transposes of the
 * kinds ONNX Runtime copies in blocks (one axis moved; the innermost axis kept), not one 6-D
 * transpose that moves the innermost axis, which it copies element by element (3–4× slower; the
 * figures are in docs/benchmarks.md, "NCHWc").
 */
export function blockedWeight(c: LowerCtx, w: string, wShape: readonly number[], flip: boolean): string {
  const B = c.passes.nchwc;
  const [O, C, kh, kw] = wShape as [number, number, number, number];
  const K = kh * kw;
  const wb = c.tmp(flip ? "w_flipped_blocked" : "w_blocked");
  if (!flip) {
    // [O/B, B_out, C·K] → [O/B, C·K, B_out] = [O/B·C/B, B_in, K, B_out] → [O/B·C/B, K, B_in, B_out]
    const a = c.tmp("w_split");
    c.emit("Reshape", [w, c.i64([O / B, B, C * K])], [a]);
    const t1 = c.tmp("w_out_inner");
    c.emit("Transpose", [a], [t1], { perm: ints([0, 2, 1]) });
    const b = c.tmp("w_split");
    c.emit("Reshape", [t1, c.i64([(O / B) * (C / B), B, K, B])], [b]);
    const t2 = c.tmp("w_blocked4");
    c.emit("Transpose", [b], [t2], { perm: ints([0, 2, 1, 3]) });
    c.emit("Reshape", [t2, c.i64([O, C, kh, kw])], [wb]);
    return wb;
  }
  // [O/B, B_o, C/B, B_c, K] → [O/B, B_o, K, C/B, B_c] → taps reversed → [C/B, O/B, K, B_o, B_c]
  const a = c.tmp("w_split");
  c.emit("Reshape", [w, c.i64([O / B, B, C / B, B, K])], [a]);
  const t1 = c.tmp("w_taps_out");
  c.emit("Transpose", [a], [t1], { perm: ints([0, 1, 4, 2, 3]) });
  let f = t1;
  if (K > 1) {
    f = c.tmp("w_taps_reversed");
    c.emit("Gather", [t1, c.i64(Array.from({ length: K }, (_, k) => K - 1 - k))], [f], { axis: int(2) });
  }
  const t2 = c.tmp("w_blocked5");
  c.emit("Transpose", [f], [t2], { perm: ints([3, 0, 2, 1, 4]) });
  c.emit("Reshape", [t2, c.i64([C, O, kh, kw])], [wb]);
  return wb;
}

/**
 * y = conv(x, w) + b (group 1; b optional) through the blocked kernel: x [N, C, H, W] and y in the
 * plain layout. w [O, C, kh, kw] is reordered in the graph to [O/B, C/B, kh, kw, B_in, B_out], or to
 * [O/B, C, kh, kw, B_out] when C < B (the input then stays plain); O is padded to whole blocks with
 * zero filters and the padding dropped again by the output reorder. `wBlocked`: w already in the
 * blocked layout (`blockedWeight`; O and C whole blocks).
 */
export function blockedConv(
  c: LowerCtx,
  x: string,
  w: string,
  wShape: readonly number[],
  a: Conv2d,
  out: string,
  bias?: string,
  wBlocked?: string,
): void {
  const B = c.passes.nchwc;
  const [O, C, kh, kw] = wShape as [number, number, number, number];
  const plainInput = C < B;
  let wb = wBlocked;
  let bp = bias;
  if (!wb && O % B === 0 && C % B === 0) wb = blockedWeight(c, w, wShape, false);
  if (!wb) {
    const Op = Math.ceil(O / B) * B;
    let wp = w;
    if (Op !== O) {
      wp = c.tmp("w_padded");
      c.emit("Pad", [w, c.i64([0, 0, 0, 0, Op - O, 0, 0, 0])], [wp]);
      if (bias) {
        bp = c.tmp("b_padded");
        c.emit("Pad", [bias, c.i64([0, Op - O])], [bp]);
      }
    }
    const w6 = c.tmp("w_split");
    const wt = c.tmp("w_blocked6");
    if (plainInput) {
      c.emit("Reshape", [wp, c.i64([Op / B, B, C, kh, kw])], [w6]);
      c.emit("Transpose", [w6], [wt], { perm: ints([0, 2, 3, 4, 1]) });
    } else {
      c.emit("Reshape", [wp, c.i64([Op / B, B, C / B, B, kh, kw])], [w6]);
      c.emit("Transpose", [w6], [wt], { perm: ints([0, 2, 4, 5, 3, 1]) });
    }
    wb = c.tmp("w_blocked");
    c.emit("Reshape", [wt, c.i64([Op, C, kh, kw])], [wb]);
  }
  let xb = x;
  if (!plainInput) {
    xb = c.tmp("x_blocked");
    c.emit("ReorderInput", [x], [xb], undefined, NCHWC_DOMAIN);
  }
  const yb = c.tmp("y_blocked");
  c.emit(
    "Conv",
    bp ? [xb, wb, bp] : [xb, wb],
    [yb],
    {
      kernel_shape: ints([kh, kw]),
      strides: ints(a.strides),
      pads: ints(a.pads),
      dilations: ints(a.dilations),
      group: int(1),
    },
    NCHWC_DOMAIN,
  );
  c.emit("ReorderOutput", [yb], [out], { channels: int(O) }, NCHWC_DOMAIN);
}
