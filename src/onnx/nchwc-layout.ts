/**
 * Activations kept in ONNX Runtime's blocked layout (NCHWc) between convolutions.
 *
 * A blocked convolution (nchwc.ts) reorders its input into blocks and its output back, so in a U-Net
 * every group norm, SiLU, residual add and concatenation between two convolutions runs in the plain
 * layout with a reorder on either side (~11% of a sampling forward). This pass rewrites the emitted
 * node list so those values stay blocked: it follows each blocked tensor through the ops that do not
 * care about the layout or can be written for it, and turns a value back into the plain layout only
 * where some op needs it there (a lazily emitted ReorderOutput, dropped again when nothing reads it).
 *
 * The blocked layout of an [N, C, H, W] tensor is [N, C/B, H, W, B] in memory; ONNX Runtime gives it
 * the plain shape [N, C, H, W] (C a multiple of B here). So:
 * - elementwise ops over tensors of one shape, Reshapes, and Concat on the channel axis (all channel
 *   counts multiples of B) compute the right thing on blocked data unchanged;
 * - the blocked layout of [N, C, H, W] is also that of [1, N·C, H, W]: a per-(sample, channel) scale
 *   and shift (a group norm's, or a broadcast add of the time embedding) is one depthwise 1×1 blocked
 *   convolution with N·C groups, which ONNX Runtime has a kernel for;
 * - statistics per channel group: per channel first (a reduction over the spatial axis of the
 *   [N, C/B, H·W, B] view), then over the channels of each group;
 * - a residual add of a blocked convolution's output is that convolution's fused Sum input;
 * - nearest upsampling has a blocked kernel (Upsample in the NCHWc domain).
 *
 * Training graphs are left alone (`emit.ts` runs this only without a backward pass): their gradients
 * read forward values in the plain layout, so blocking those would add reorders, not remove them.
 */
import { NCHWC_DOMAIN } from "./nchwc.ts";
import type { OnnxAttr, OnnxNode } from "./proto.ts";

export interface LayoutCtx {
  /** ONNX Runtime's channel block (8 with AVX2). */
  block: number;
  /** A fresh value name. */
  tmp(hint: string): string;
  /** A 1-D int64 initializer; returns its name. */
  i64(values: readonly number[]): string;
  /** A float32 initializer; returns its name. */
  f32(dims: readonly number[], data: Float32Array): string;
  /** Shapes of the values the lowering named (primitive outputs, graph inputs, constants). */
  shape(name: string): readonly number[] | undefined;
  /** Whether the value is one of the graph's outputs. */
  isOutput(name: string): boolean;
  /** The data of an initializer, if `name` is one. */
  constant(name: string): Float32Array | BigInt64Array | undefined;
}

/** A plain value's blocked twin: reshape(value, shape) is the blocked tensor `name`'s plain form. */
interface Twin {
  name: string;
  shape: readonly [number, number, number, number];
}

const ints = (value: readonly number[]): OnnxAttr => ({ kind: "ints", value });
const int = (value: number): OnnxAttr => ({ kind: "int", value });
const same = (a: readonly number[] | undefined, b: readonly number[] | undefined): boolean =>
  !!a && !!b && a.length === b.length && a.every((d, i) => d === b[i]);
const size = (s: readonly number[]): number => s.reduce((p, q) => p * q, 1);
const attrInts = (n: OnnxNode, k: string): readonly number[] | undefined => {
  const a = n.attributes?.[k];
  return a?.kind === "ints" ? a.value : undefined;
};
const attrInt = (n: OnnxNode, k: string): number | undefined => {
  const a = n.attributes?.[k];
  return a?.kind === "int" ? a.value : undefined;
};
const attrString = (n: OnnxNode, k: string): string | undefined => {
  const a = n.attributes?.[k];
  return a?.kind === "string" ? a.value : undefined;
};

const UNARY = new Set(["Sigmoid", "Tanh", "Relu", "Neg", "Exp", "Log", "Sqrt", "Abs", "Erf", "Sin", "Cos"]);
const BINARY = new Set(["Add", "Sub", "Mul", "Div", "Max", "Min"]);

/** Rewrites `nodes` (topologically ordered) to keep blocked tensors blocked; returns a new list. */
export function keepBlocked(nodes: readonly OnnxNode[], c: LayoutCtx): OnnxNode[] {
  const B = c.block;
  const readers = new Map<string, OnnxNode[]>();
  for (const n of nodes) for (const i of n.inputs) if (i) readers.set(i, [...(readers.get(i) ?? []), n]);
  const readBy = (v: string): OnnxNode[] => readers.get(v) ?? [];

  const out: (OnnxNode | null)[] = [];
  const twins = new Map<string, Twin>();
  const shapes = new Map<string, readonly number[]>();
  const shapeOf = (v: string): readonly number[] | undefined => shapes.get(v) ?? c.shape(v);
  const rename = new Map<string, string>();
  /** The blocked convolution (index into `out`) that produced a blocked value, for Sum fusion. */
  const convOf = new Map<string, number>();
  const emit = (n: OnnxNode): void => {
    out.push(n);
  };
  const node = (
    opType: string,
    inputs: readonly string[],
    outputs: readonly string[],
    attributes?: Record<string, OnnxAttr>,
    domain?: string,
  ): void =>
    emit({ opType, inputs, outputs, ...(attributes ? { attributes } : {}), ...(domain ? { domain } : {}) });
  const blockable = (s: readonly number[] | undefined): s is readonly [number, number, number, number] =>
    !!s && s.length === 4 && s[1]! % B === 0 && s[1]! > 0;

  /** Records `plain`'s twin and emits the nodes that would materialize `plain` (dropped if unread). */
  const setTwin = (plain: string, twin: Twin): void => {
    twins.set(plain, twin);
    shapes.set(twin.name, twin.shape);
    const s = shapeOf(plain);
    if (!s) throw new Error(`keepBlocked: no shape for ${plain}`);
    if (same(s, twin.shape)) {
      node("ReorderOutput", [twin.name], [plain], { channels: int(twin.shape[1]) }, NCHWC_DOMAIN);
    } else {
      const t = c.tmp("plain4");
      node("ReorderOutput", [twin.name], [t], { channels: int(twin.shape[1]) }, NCHWC_DOMAIN);
      node("Reshape", [t, c.i64(s)], [plain]);
    }
  };
  /** The blocked tensor holding a plain value of exactly shape `s4` (reordered here if needed). */
  const blockedAs = (v: string, s4: readonly number[]): string => {
    const t = twins.get(v);
    if (t && same(t.shape, s4)) return t.name;
    const src = t ? reshapeTwin(t, s4) : undefined;
    if (src) return src;
    const name = c.tmp("x_blocked");
    node("ReorderInput", [v], [name], undefined, NCHWC_DOMAIN);
    twins.set(v, { name, shape: s4 as Twin["shape"] });
    shapes.set(name, s4);
    return name;
  };
  /** The same blocked data viewed as another 4-D shape (same element order, channels in blocks). */
  const reshapeTwin = (t: Twin, s4: readonly number[]): string | undefined => {
    if (!blockable(s4) || size(s4) !== size(t.shape) || s4[2] !== t.shape[2] || s4[3] !== t.shape[3])
      return undefined;
    const name = c.tmp("blocked_view");
    node("Reshape", [t.name, c.i64(s4)], [name]);
    shapes.set(name, s4);
    return name;
  };
  const fresh = (hint: string, s4: readonly number[]): string => {
    const name = c.tmp(hint);
    shapes.set(name, s4);
    return name;
  };

  /** Per-(sample, channel) y = x·scale + shift on blocked x [N, C, H, W]; scale/shift [N·C] or absent. */
  const affine = (
    xb: string,
    s4: Twin["shape"],
    scale: string | undefined,
    shift: string | undefined,
  ): string => {
    const [N, C, H, W] = s4;
    const nc = N * C;
    const view = fresh("nc_view", [1, nc, H, W]);
    node("Reshape", [xb, c.i64([1, nc, H, W])], [view]);
    let w: string;
    if (scale) {
      w = c.tmp("dw_weight");
      node("Reshape", [scale, c.i64([nc, 1, 1, 1])], [w]);
    } else w = c.f32([nc, 1, 1, 1], new Float32Array(nc).fill(1));
    const y = fresh("nc_affine", [1, nc, H, W]);
    node("Conv", shift ? [view, w, shift] : [view, w], [y], conv1x1(nc), NCHWC_DOMAIN);
    const yb = fresh("affine_blocked", s4);
    node("Reshape", [y, c.i64(s4)], [yb]);
    return yb;
  };
  /** A per-channel operand ([C], [1|N, C, 1, 1], …) of an op over [N, C, H, W], as an [N·C] vector. */
  const perSample = (v: string, s4: Twin["shape"]): string | undefined => {
    const s = shapeOf(v);
    const [N, C] = s4;
    if (!s || s.length > 4) return undefined;
    const p = [...new Array<number>(4 - s.length).fill(1), ...s];
    if (p[1] !== C || p[2] !== 1 || p[3] !== 1 || (p[0] !== 1 && p[0] !== N)) return undefined;
    let full = v;
    if (p[0] !== N) {
      full = c.tmp("per_channel_n");
      node("Expand", [v, c.i64([N, C, 1, 1])], [full]);
    }
    const flat = c.tmp("per_sample");
    node("Reshape", [full, c.i64([N * C])], [flat]);
    return flat;
  };

  /** Group statistics' reshapes [N, C, H, W] → [N, G, (C/G)·H·W] whose only readers reduce axis 2. */
  const statsViews = new Map<
    string,
    { view: string; base: string; s4: Twin["shape"]; G: number; shift?: string; mean?: string }
  >();
  /**
   * Values x + t (t per sample and channel, e.g. a time embedding) whose group norm can take the add
   * into its statistics and its shift instead of reading a materialized sum: base is x's twin, shift
   * is t as [N·C]. The materialized sum is emitted too and dropped when nothing reads it.
   */
  const shifted = new Map<string, { base: Twin; shift: string }>();
  /** BatchNormalization inputs viewed as [1, N·C, H·W] from a blocked [N, C, H, W]. */
  const bnViews = new Map<string, { twin: Twin; reshape: OnnxNode; shift?: string }>();
  const f32Const = (v: string | undefined): Float32Array | undefined => {
    const d = v ? c.constant(v) : undefined;
    return d instanceof Float32Array ? d : undefined;
  };
  /** A Reshape's target shape, from the lowering's shapes or its (explicit) shape initializer. */
  const reshapeTarget = (n: OnnxNode): readonly number[] | undefined => {
    const known = shapeOf(n.outputs[0]!);
    if (known) return known;
    const d = c.constant(n.inputs[1]!);
    if (!(d instanceof BigInt64Array)) return undefined;
    const s = Array.from(d, Number);
    return s.every((q) => q > 0) ? s : undefined;
  };

  const tryBlocked = (n: OnnxNode): boolean => {
    const y = n.outputs[0]!;
    if (n.domain || n.outputs.length !== 1 || c.isOutput(y)) return false;
    // the lowerings' temporaries have no recorded shape: elementwise ops' follow from their inputs
    if (!shapeOf(y) && (UNARY.has(n.opType) || BINARY.has(n.opType))) {
      const ins = n.inputs.map(shapeOf);
      if (ins.every((s) => s !== undefined)) shapes.set(y, broadcast(ins as (readonly number[])[]));
    }
    const ys = shapeOf(y);
    const t0 = twins.get(n.inputs[0] ?? "");
    if (n.opType === "Reshape") {
      const target = reshapeTarget(n);
      if (!target) return false;
      shapes.set(y, target);
      if (!t0) return false;
      const sh = shifted.get(n.inputs[0]!);
      const [N, C, H, W] = t0.shape;
      const rs = readBy(y);
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
        const view = fresh("stats_view", [N, C / B, H * W, B]);
        node("Reshape", [(sh?.base ?? t0).name, c.i64([N, C / B, H * W, B])], [view]);
        statsViews.set(y, {
          view,
          base: (sh?.base ?? t0).name,
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
        bnViews.set(y, { twin: sh?.base ?? t0, reshape: n, ...(sh ? { shift: sh.shift } : {}) });
        return true;
      }
      // any other reshape: the same blocked data, and the plain value from the original node if read
      twins.set(y, t0);
      emit(n);
      return true;
    }
    if (n.opType === "ReduceMean" || n.opType === "ReduceSumSquare") {
      const sv = statsViews.get(n.inputs[0]!);
      if (!sv) return false;
      const [N, C, H, W] = sv.s4;
      const perChannelMean = (): string => {
        if (!sv.mean) {
          sv.mean = c.tmp("channel_mean");
          node("ReduceMean", [sv.view], [sv.mean], { axes: ints([2]), keepdims: int(1) });
        }
        return sv.mean;
      };
      /**
       * Σ x² per sample and channel as a depthwise convolution of x with itself: the blocked layout of
       * [N, C, H, W] is that of [1, N·C, H, W] and also that of the depthwise filter [N·C, 1, H, W]
       * the blocked kernel reads, so one H×W "filter" per channel is the channel itself (~2.5× faster
       * than ReduceSumSquare over the spatial axis of the blocked view).
       */
      const perChannelSumSq = (): string => {
        const nc = N * C;
        const [x1, w, ss, out] = [
          c.tmp("nc_view"),
          c.tmp("self_filter"),
          c.tmp("self_conv"),
          c.tmp("channel_sumsq"),
        ];
        node("Reshape", [sv.base, c.i64([1, nc, H, W])], [x1]);
        node("Reshape", [sv.base, c.i64([nc, 1, H, W])], [w]);
        node(
          "Conv",
          [x1, w],
          [ss],
          {
            kernel_shape: ints([H, W]),
            strides: ints([1, 1]),
            pads: ints([0, 0, 0, 0]),
            dilations: ints([1, 1]),
            group: int(nc),
          },
          NCHWC_DOMAIN,
        );
        node("Reshape", [ss, c.i64([N, C / B, 1, B])], [out]);
        return out;
      };
      let perChannel: string;
      if (!sv.shift) perChannel = n.opType === "ReduceMean" ? perChannelMean() : perChannelSumSq();
      else {
        // statistics of x + t from those of x: mean + t, and Σ(x + t)² = Σx² + H·W·t·(2·mean + t)
        const t = c.tmp("shift_view");
        node("Reshape", [sv.shift, c.i64([N, C / B, 1, B])], [t]);
        const m = perChannelMean();
        perChannel = c.tmp("channel_stat");
        if (n.opType === "ReduceMean") node("Add", [m, t], [perChannel]);
        else {
          const ss = perChannelSumSq();
          const [m2, m2t, cross] = [c.tmp("twice_mean"), c.tmp("twice_mean_t"), c.tmp("cross")];
          node("Add", [m, m], [m2]);
          node("Add", [m2, t], [m2t]);
          node("Mul", [m2t, t], [cross]);
          const crossHW = c.tmp("cross_hw");
          node("Mul", [cross, c.f32([], Float32Array.of(H * W))], [crossHW]);
          node("Add", [ss, crossHW], [perChannel]);
        }
      }
      const grouped = c.tmp("grouped_stat");
      node("Reshape", [perChannel, c.i64([N, sv.G, C / sv.G])], [grouped]);
      if (n.opType === "ReduceMean")
        node("ReduceMean", [grouped], [y], { axes: ints([2]), keepdims: int(1) });
      else node("ReduceSum", [grouped, c.i64([2])], [y], { keepdims: int(1) });
      return true;
    }
    if (n.opType === "BatchNormalization") {
      const view = bnViews.get(n.inputs[0]!);
      if (!view) return false;
      const [, scale, shift, mean, variance] = n.inputs;
      const m = f32Const(mean);
      const v = f32Const(variance);
      const eps = n.attributes?.["epsilon"];
      const plainScaleShift =
        n.inputs.length === 5 &&
        eps?.kind === "float" &&
        eps.value === 0 &&
        !!m?.every((q) => q === 0) &&
        !!v?.every((q) => q === 1);
      if (!plainScaleShift) {
        emit(view.reshape); // the [1, N·C, H·W] input in the plain layout after all
        return false;
      }
      const t = view.twin;
      let total = shift!;
      if (view.shift) {
        // a·(x + t) + s = a·x + (a·t + s)
        const at = c.tmp("scaled_shift");
        node("Mul", [scale!, view.shift], [at]);
        total = c.tmp("total_shift");
        node("Add", [at, shift!], [total]);
      }
      shapes.set(y, shapeOf(n.inputs[0]!)!);
      setTwin(y, { name: affine(t.name, t.shape, scale!, total), shape: t.shape });
      return true;
    }
    if (UNARY.has(n.opType)) {
      if (!t0 || n.inputs.length !== 1) return false;
      const yb = fresh(`${n.opType.toLowerCase()}_blocked`, t0.shape);
      node(n.opType, [t0.name], [yb], n.attributes as Record<string, OnnxAttr> | undefined);
      setTwin(y, { name: yb, shape: t0.shape });
      return true;
    }
    if (BINARY.has(n.opType) && n.inputs.length === 2 && blockable(ys)) {
      const [a, b] = n.inputs as [string, string];
      const full = (v: string) => same(shapeOf(v), ys);
      const ta = twins.get(a);
      const tb = twins.get(b);
      if (full(a) && full(b) && ((ta && same(ta.shape, ys)) || (tb && same(tb.shape, ys)))) {
        const ab = blockedAs(a, ys);
        const bb = blockedAs(b, ys);
        if (n.opType === "Add") {
          // y = conv(…) + other: the blocked convolution accumulates into `other` (its Sum input)
          for (const [mine, other] of [
            [ab, bb],
            [bb, ab],
          ] as const) {
            const k = convOf.get(mine);
            const conv = k === undefined ? undefined : out[k];
            if (!conv || conv.inputs.length > 3 || conv.attributes?.["activation"]) continue;
            if (mine === other) continue;
            // the convolution's plain output must have no reader but this Add
            const plain = [...twins].find(([, tw]) => tw.name === mine)?.[0];
            if (plain === undefined || readBy(plain).length !== 1) continue;
            out[k!] = null;
            const inputs = [conv.inputs[0]!, conv.inputs[1]!, conv.inputs[2] ?? "", other];
            const yb = fresh("conv_sum_blocked", ys);
            emit({ ...conv, inputs, outputs: [yb] });
            convOf.set(yb, out.length - 1);
            setTwin(y, { name: yb, shape: ys });
            return true;
          }
        }
        const yb = fresh(`${n.opType.toLowerCase()}_blocked`, ys);
        node(n.opType, [ab, bb], [yb]);
        setTwin(y, { name: yb, shape: ys });
        return true;
      }
      // x ± per-channel vector, x · per-channel vector: one depthwise blocked convolution
      for (const [x, p, tx] of [
        [a, b, ta],
        [b, a, tb],
      ] as const) {
        if (!tx || !same(tx.shape, ys) || !full(x) || full(p)) continue;
        if (n.opType === "Sub" && x !== a) continue;
        if (n.opType !== "Add" && n.opType !== "Sub" && n.opType !== "Mul") continue;
        const vec = perSample(p, tx.shape);
        if (!vec) continue;
        let yb: string;
        if (n.opType === "Mul") yb = affine(tx.name, tx.shape, vec, undefined);
        else {
          let shift = vec;
          if (n.opType === "Sub") {
            shift = c.tmp("neg_shift");
            node("Neg", [vec], [shift]);
          }
          yb = affine(tx.name, tx.shape, undefined, shift);
          shifted.set(y, { base: tx, shift });
        }
        setTwin(y, { name: yb, shape: tx.shape });
        return true;
      }
      return false;
    }
    if (n.opType === "Concat" && blockable(ys)) {
      const axis = attrInt(n, "axis");
      if (axis !== 1 && axis !== -3) return false;
      const ok = n.inputs.every((v) => {
        const s = shapeOf(v);
        return blockable(s) && s[0] === ys[0] && s[2] === ys[2] && s[3] === ys[3];
      });
      if (!ok || !n.inputs.some((v) => twins.has(v) && same(twins.get(v)!.shape, shapeOf(v)))) return false;
      const parts = n.inputs.map((v) => blockedAs(v, shapeOf(v)!));
      const yb = fresh("concat_blocked", ys);
      node("Concat", parts, [yb], { axis: int(1) });
      setTwin(y, { name: yb, shape: ys });
      return true;
    }
    if (n.opType === "Resize" && t0 && blockable(ys) && same(shapeOf(n.inputs[0]!), t0.shape)) {
      if (
        attrString(n, "mode") !== "nearest" ||
        attrString(n, "coordinate_transformation_mode") !== "asymmetric" ||
        attrString(n, "nearest_mode") !== "floor"
      )
        return false;
      const [N, C, H, W] = t0.shape;
      const [N2, C2, H2, W2] = ys;
      if (N2 !== N || C2 !== C || H2 % H !== 0 || W2 % W !== 0) return false;
      const yb = fresh("upsample_blocked", ys);
      node(
        "Upsample",
        [t0.name],
        [yb],
        { scales: ints([1, 1, H2 / H, W2 / W]), mode: { kind: "string", value: "nearest" } },
        NCHWC_DOMAIN,
      );
      setTwin(y, { name: yb, shape: ys });
      return true;
    }
    return false;
  };

  for (const n0 of nodes) {
    const n = n0.inputs.some((i) => rename.has(i))
      ? { ...n0, inputs: n0.inputs.map((i) => rename.get(i) ?? i) }
      : n0;
    if (n.domain === NCHWC_DOMAIN && n.opType === "ReorderOutput") {
      const s = shapeOf(n.outputs[0]!);
      if (blockable(s)) {
        twins.set(n.outputs[0]!, { name: n.inputs[0]!, shape: s });
        shapes.set(n.inputs[0]!, s);
      }
      emit(n);
      continue;
    }
    if (n.domain === NCHWC_DOMAIN && n.opType === "ReorderInput") {
      const x = n.inputs[0]!;
      const t = twins.get(x);
      const s = shapeOf(x);
      if (t && same(t.shape, s)) {
        rename.set(n.outputs[0]!, t.name);
        continue;
      }
      if (blockable(s)) {
        twins.set(x, { name: n.outputs[0]!, shape: s });
        shapes.set(n.outputs[0]!, s);
      }
      emit(n);
      continue;
    }
    if (n.domain === NCHWC_DOMAIN && n.opType === "Conv") {
      emit(n);
      convOf.set(n.outputs[0]!, out.length - 1);
      continue;
    }
    if (tryBlocked(n)) continue;
    emit(n);
  }
  return deadCodeDropped(
    out.filter((n): n is OnnxNode => n !== null),
    c.isOutput,
  );
}

/** NumPy broadcasting of shapes that are known to be compatible (the graph was shape-checked). */
function broadcast(shapes: readonly (readonly number[])[]): number[] {
  const rank = Math.max(...shapes.map((s) => s.length));
  return Array.from({ length: rank }, (_, i) => Math.max(...shapes.map((s) => s[s.length - rank + i] ?? 1)));
}

function conv1x1(groups: number): Record<string, OnnxAttr> {
  return {
    kernel_shape: ints([1, 1]),
    strides: ints([1, 1]),
    pads: ints([0, 0, 0, 0]),
    dilations: ints([1, 1]),
    group: int(groups),
  };
}

/** `nodes` without those whose outputs nothing reads (graph outputs are read). */
export function deadCodeDropped(nodes: readonly OnnxNode[], isOutput: (name: string) => boolean): OnnxNode[] {
  const read = new Set<string>();
  const kept: OnnxNode[] = [];
  for (let k = nodes.length - 1; k >= 0; k--) {
    const n = nodes[k]!;
    if (!n.outputs.some((o) => o && (read.has(o) || isOutput(o)))) continue;
    kept.push(n);
    for (const i of n.inputs) if (i) read.add(i);
  }
  return kept.reverse();
}
