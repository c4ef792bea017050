/**
 * Group norms on blocked activations (part of nchwc-layout.ts's rewrite): what a forward-only group
 * norm (fuse-groupnorm.ts: statistics, then one per-(sample, channel) scale and shift) becomes when its
 * input is blocked.
 *
 * - The statistics: `Reshape [N, C, H, W] → [N, G, (C/G)·H·W]` read only by ReduceMean / ReduceSumSquare
 *   over axis 2. Per channel first, then over each group's channels: the mean per channel is a
 *   ReduceMean over the spatial axis of the [N, C/B, H·W, B] view; Σx² per channel is a depthwise
 *   convolution of the blocked tensor with itself (below).
 * - The scale and shift: `Reshape → [1, N·C, H·W] → BatchNormalization (mean 0, variance 1, ε 0) →
 *   Reshape back` becomes one depthwise 1×1 blocked convolution over [1, N·C, H, W].
 * - A per-sample add before the norm (a ResNet's time embedding, h = x + t) is folded in: the
 *   statistics of h come from those of x (mean + t; Σh² = Σx² + H·W·t·(2·mean + t)) and the shift
 *   becomes a·t + s, so h itself is never written (its depthwise add is emitted and then dropped as
 *   unread).
 */
import { attrInt, attrInts, type OnnxNode } from "../proto.ts";
import { depthwise, int, ints, NCHWC_DOMAIN, same } from "./nchwc.ts";
import type { Layout, Twin } from "./nchwc-state.ts";

interface StatsView {
  /** The [N, C/B, H·W, B] view of the normalized tensor (or of x when folding x + t). */
  view: string;
  /** The blocked tensor itself. */
  base: string;
  s4: Twin["shape"];
  G: number;
  /** t as [N·C] when the normalized tensor is base + t. */
  shift?: string;
  /** The per-channel mean, once computed. */
  mean?: string;
}

export class GroupNormRules {
  private readonly statsViews = new Map<string, StatsView>();
  /** Values x + t (t per sample and channel): x's twin and t as [N·C]. */
  private readonly shifted = new Map<string, { base: Twin; shift: string }>();
  /** BatchNormalization inputs: the [1, N·C, H·W] view of a blocked [N, C, H, W]. */
  private readonly bnViews = new Map<string, { twin: Twin; reshape: OnnxNode; shift?: string }>();

  constructor(private readonly L: Layout) {}

  /** y = x + t with x's twin `base` and t as [N·C], written as a depthwise add that may go unread. */
  noteShift(y: string, base: Twin, shift: string): void {
    this.shifted.set(y, { base, shift });
  }

  /** A Reshape of a blocked tensor into a group norm's statistics or scale-and-shift view. */
  claimReshape(n: OnnxNode, t0: Twin, target: readonly number[]): boolean {
    const { L } = this;
    const y = n.outputs[0]!;
    const sh = this.shifted.get(n.inputs[0]!);
    const base = sh?.base ?? t0;
    const [N, C, H, W] = t0.shape;
    const rs = L.readBy(y);
    const reduces = (r: OnnxNode) =>
      (r.opType === "ReduceMean" || r.opType === "ReduceSumSquare") &&
      same(attrInts(r, "axes"), [2]) &&
      attrInt(r, "keepdims") === 1 &&
      r.inputs.length === 1;
    if (
      target.length === 3 &&
      target[0] === N &&
      C % target[1]! === 0 &&
      rs.length > 0 &&
      rs.every(reduces)
    ) {
      const B = L.B;
      const view = L.fresh("stats_view", [N, C / B, H * W, B]);
      L.node("Reshape", [base.name, L.c.i64([N, C / B, H * W, B])], [view]);
      this.statsViews.set(y, {
        view,
        base: base.name,
        s4: t0.shape,
        G: target[1]!,
        ...(sh ? { shift: sh.shift } : {}),
      });
      return true;
    }
    if (
      same(target, [1, N * C, H * W]) &&
      rs.length === 1 &&
      rs[0]!.opType === "BatchNormalization" &&
      rs[0]!.inputs[0] === y
    ) {
      this.bnViews.set(y, { twin: base, reshape: n, ...(sh ? { shift: sh.shift } : {}) });
      return true;
    }
    return false;
  }

  /** The statistics' reductions and the scale-and-shift BatchNormalization of a claimed view. */
  rewrite(n: OnnxNode): boolean {
    if (n.opType === "ReduceMean" || n.opType === "ReduceSumSquare") return this.statistic(n);
    if (n.opType === "BatchNormalization") return this.scaleShift(n);
    return false;
  }

  private statistic(n: OnnxNode): boolean {
    const { L } = this;
    const c = L.c;
    const sv = this.statsViews.get(n.inputs[0]!);
    if (!sv) return false;
    const [N, C, H, W] = sv.s4;
    const B = L.B;
    const y = n.outputs[0]!;
    const t = () => {
      const name = c.tmp("shift_view");
      L.node("Reshape", [sv.shift!, c.i64([N, C / B, 1, B])], [name]);
      return name;
    };
    let perChannel: string;
    if (n.opType === "ReduceMean") {
      perChannel = this.channelMean(sv);
      if (sv.shift) {
        const shiftedMean = c.tmp("channel_stat");
        L.node("Add", [perChannel, t()], [shiftedMean]);
        perChannel = shiftedMean;
      }
    } else {
      perChannel = this.channelSumSq(sv);
      if (sv.shift) {
        // Σ(x + t)² = Σx² + H·W·t·(2·mean + t)
        const tv = t();
        const m = this.channelMean(sv);
        const [m2, m2t, cross, crossHW, total] = [
          "twice_mean",
          "twice_mean_t",
          "cross",
          "cross_hw",
          "channel_stat",
        ].map((h) => c.tmp(h)) as [string, string, string, string, string];
        L.node("Add", [m, m], [m2]);
        L.node("Add", [m2, tv], [m2t]);
        L.node("Mul", [m2t, tv], [cross]);
        L.node("Mul", [cross, c.f32([], Float32Array.of(H * W))], [crossHW]);
        L.node("Add", [perChannel, crossHW], [total]);
        perChannel = total;
      }
    }
    const grouped = c.tmp("grouped_stat");
    L.node("Reshape", [perChannel, c.i64([N, sv.G, C / sv.G])], [grouped]);
    if (n.opType === "ReduceMean")
      L.node("ReduceMean", [grouped], [y], { axes: ints([2]), keepdims: int(1) });
    else L.node("ReduceSum", [grouped, c.i64([2])], [y], { keepdims: int(1) });
    return true;
  }

  /** The per-channel mean [N, C/B, 1, B] of a statistics view (computed once). */
  private channelMean(sv: StatsView): string {
    if (!sv.mean) {
      sv.mean = this.L.c.tmp("channel_mean");
      this.L.node("ReduceMean", [sv.view], [sv.mean], { axes: ints([2]), keepdims: int(1) });
    }
    return sv.mean;
  }

  /**
   * Σx² per sample and channel [N, C/B, 1, B] as a depthwise convolution of x with itself: the
   * blocked layout of [N, C, H, W] is that of [1, N·C, H, W] and also that of the depthwise filter
   * [N·C, 1, H, W] the blocked kernel reads, so each channel's H×W "filter" is the channel itself
   * (~2.5× faster than ReduceSumSquare over the spatial axis of the blocked view).
   */
  private channelSumSq(sv: StatsView): string {
    const { L } = this;
    const c = L.c;
    const [N, C, H, W] = sv.s4;
    const nc = N * C;
    const [x1, w, ss, out] = ["nc_view", "self_filter", "self_conv", "channel_sumsq"].map((h) =>
      c.tmp(h),
    ) as [string, string, string, string];
    L.node("Reshape", [sv.base, c.i64([1, nc, H, W])], [x1]);
    L.node("Reshape", [sv.base, c.i64([nc, 1, H, W])], [w]);
    L.node("Conv", [x1, w], [ss], depthwise(nc, H, W), NCHWC_DOMAIN);
    L.node("Reshape", [ss, c.i64([N, C / L.B, 1, L.B])], [out]);
    return out;
  }

  private scaleShift(n: OnnxNode): boolean {
    const { L } = this;
    const c = L.c;
    const view = this.bnViews.get(n.inputs[0]!);
    if (!view) return false;
    const [, scale, shift, mean, variance] = n.inputs;
    const f32 = (v: string | undefined) => {
      const d = v ? c.constant(v) : undefined;
      return d instanceof Float32Array ? d : undefined;
    };
    const m = f32(mean);
    const v = f32(variance);
    const eps = n.attributes?.["epsilon"];
    const plainScaleShift =
      n.inputs.length === 5 &&
      eps?.kind === "float" &&
      eps.value === 0 &&
      !!m?.every((q) => q === 0) &&
      !!v?.every((q) => q === 1);
    if (!plainScaleShift) {
      L.emit(view.reshape); // the [1, N·C, H·W] input in the plain layout after all
      return false;
    }
    let total = shift!;
    if (view.shift) {
      // a·(x + t) + s = a·x + (a·t + s)
      const at = c.tmp("scaled_shift");
      L.node("Mul", [scale!, view.shift], [at]);
      total = c.tmp("total_shift");
      L.node("Add", [at, shift!], [total]);
    }
    const y = n.outputs[0]!;
    L.shapes.set(y, L.shapeOf(n.inputs[0]!)!);
    const t = view.twin;
    L.setTwin(y, { name: L.affine(t.name, t.shape, scale!, total), shape: t.shape });
    return true;
  }
}
