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
 * - a group norm's statistics and its time-embedding add have rules of their own
 *   (nchwc-groupnorm.ts);
 * - a residual add of a blocked convolution's output is that convolution's fused Sum input;
 * - nearest upsampling has a blocked kernel (Upsample in the NCHWc domain).
 *
 * This is the "keepBlocked" pass (passes/options.ts). By default training graphs are left alone
 * (`emit.ts` runs it only without a backward pass): their gradients read forward values in the plain
 * layout, so blocking those would add reorders, not remove them.
 */

import { attrInt, attrString, type OnnxAttr, type OnnxNode } from "../proto.ts";
import { int, ints, NCHWC_DOMAIN, same } from "./nchwc.ts";
import { GroupNormRules } from "./nchwc-groupnorm.ts";
import { Layout, type LayoutCtx, type Twin } from "./nchwc-state.ts";

const UNARY = new Set(["Sigmoid", "Tanh", "Relu", "Neg", "Exp", "Log", "Sqrt", "Abs", "Erf", "Sin", "Cos"]);
const BINARY = new Set(["Add", "Sub", "Mul", "Div", "Max", "Min"]);

/** Rewrites `nodes` (topologically ordered) to keep blocked tensors blocked; returns a new list. */
export function keepBlocked(nodes: readonly OnnxNode[], c: LayoutCtx): OnnxNode[] {
  const L = new Layout(nodes, c);
  const gn = new GroupNormRules(L);
  const rename = new Map<string, string>();
  for (const n0 of nodes) {
    const n = n0.inputs.some((i) => rename.has(i))
      ? { ...n0, inputs: n0.inputs.map((i) => rename.get(i) ?? i) }
      : n0;
    if (n.domain === NCHWC_DOMAIN && n.opType === "ReorderOutput") {
      const s = L.shapeOf(n.outputs[0]!);
      if (L.blockable(s)) {
        L.twins.set(n.outputs[0]!, { name: n.inputs[0]!, shape: s });
        L.shapes.set(n.inputs[0]!, s);
      }
      L.emit(n);
      continue;
    }
    if (n.domain === NCHWC_DOMAIN && n.opType === "ReorderInput") {
      const x = n.inputs[0]!;
      const t = L.twins.get(x);
      const s = L.shapeOf(x);
      if (t && same(t.shape, s)) {
        rename.set(n.outputs[0]!, t.name);
        continue;
      }
      if (L.blockable(s)) {
        L.twins.set(x, { name: n.outputs[0]!, shape: s });
        L.shapes.set(n.outputs[0]!, s);
      }
      L.emit(n);
      continue;
    }
    if (n.domain === NCHWC_DOMAIN && n.opType === "Conv") {
      L.emit(n);
      L.convOf.set(n.outputs[0]!, L.out.length - 1);
      continue;
    }
    if (tryBlocked(L, gn, n)) continue;
    L.emit(n);
  }
  return deadCodeDropped(
    L.out.filter((n): n is OnnxNode => n !== null),
    c.isOutput,
  );
}

/** Writes `n` on blocked data if its inputs are blocked and the op allows it; false leaves it as it is. */
function tryBlocked(L: Layout, gn: GroupNormRules, n: OnnxNode): boolean {
  const c = L.c;
  const y = n.outputs[0]!;
  if (n.domain || n.outputs.length !== 1 || c.isOutput(y)) return false;
  // the lowerings' temporaries have no recorded shape: elementwise ops' follow from their inputs
  if (!L.shapeOf(y) && (UNARY.has(n.opType) || BINARY.has(n.opType))) {
    const ins = n.inputs.map((v) => L.shapeOf(v));
    if (ins.every((s) => s !== undefined)) L.shapes.set(y, broadcast(ins as (readonly number[])[]));
  }
  const ys = L.shapeOf(y);
  const t0 = L.twins.get(n.inputs[0] ?? "");
  if (n.opType === "Reshape") {
    const target = reshapeTarget(L, n);
    if (!target) return false;
    L.shapes.set(y, target);
    if (!t0) return false;
    if (gn.claimReshape(n, t0, target)) return true;
    // any other reshape: the same blocked data, and the plain value from the original node if read
    L.twins.set(y, t0);
    L.emit(n);
    return true;
  }
  if (gn.rewrite(n)) return true;
  if (UNARY.has(n.opType)) {
    if (!t0 || n.inputs.length !== 1) return false;
    const yb = L.fresh(`${n.opType.toLowerCase()}_blocked`, t0.shape);
    L.node(n.opType, [t0.name], [yb], n.attributes as Record<string, OnnxAttr> | undefined);
    L.setTwin(y, { name: yb, shape: t0.shape });
    return true;
  }
  if (BINARY.has(n.opType) && n.inputs.length === 2 && L.blockable(ys)) return binary(L, gn, n, ys);
  if (n.opType === "Concat" && L.blockable(ys)) {
    const axis = attrInt(n, "axis");
    if (axis !== 1 && axis !== -3) return false;
    const ok = n.inputs.every((v) => {
      const s = L.shapeOf(v);
      return L.blockable(s) && s[0] === ys[0] && s[2] === ys[2] && s[3] === ys[3];
    });
    if (!ok || !n.inputs.some((v) => same(L.twins.get(v)?.shape, L.shapeOf(v)))) return false;
    const parts = n.inputs.map((v) => L.blockedAs(v, L.shapeOf(v)!));
    const yb = L.fresh("concat_blocked", ys);
    L.node("Concat", parts, [yb], { axis: int(1) });
    L.setTwin(y, { name: yb, shape: ys });
    return true;
  }
  if (n.opType === "Resize" && t0 && L.blockable(ys) && same(L.shapeOf(n.inputs[0]!), t0.shape)) {
    if (
      attrString(n, "mode") !== "nearest" ||
      attrString(n, "coordinate_transformation_mode") !== "asymmetric" ||
      attrString(n, "nearest_mode") !== "floor"
    )
      return false;
    const [N, C, H, W] = t0.shape;
    const [N2, C2, H2, W2] = ys;
    if (N2 !== N || C2 !== C || H2 % H !== 0 || W2 % W !== 0) return false;
    const yb = L.fresh("upsample_blocked", ys);
    L.node(
      "Upsample",
      [t0.name],
      [yb],
      { scales: ints([1, 1, H2 / H, W2 / W]), mode: { kind: "string", value: "nearest" } },
      NCHWC_DOMAIN,
    );
    L.setTwin(y, { name: yb, shape: ys });
    return true;
  }
  return false;
}

/** Add, Sub, Mul, Div, Max, Min with an [N, C, H, W] output. */
function binary(L: Layout, gn: GroupNormRules, n: OnnxNode, ys: Twin["shape"]): boolean {
  const y = n.outputs[0]!;
  const [a, b] = n.inputs as [string, string];
  const full = (v: string) => same(L.shapeOf(v), ys);
  const ta = L.twins.get(a);
  const tb = L.twins.get(b);
  if (full(a) && full(b) && (same(ta?.shape, ys) || same(tb?.shape, ys))) {
    const ab = L.blockedAs(a, ys);
    const bb = L.blockedAs(b, ys);
    if (n.opType === "Add" && sumFused(L, y, ys, ab, bb)) return true;
    const yb = L.fresh(`${n.opType.toLowerCase()}_blocked`, ys);
    L.node(n.opType, [ab, bb], [yb]);
    L.setTwin(y, { name: yb, shape: ys });
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
    const vec = L.perSample(p, tx.shape);
    if (!vec) continue;
    let yb: string;
    if (n.opType === "Mul") yb = L.affine(tx.name, tx.shape, vec, undefined);
    else {
      let shift = vec;
      if (n.opType === "Sub") {
        shift = L.c.tmp("neg_shift");
        L.node("Neg", [vec], [shift]);
      }
      yb = L.affine(tx.name, tx.shape, undefined, shift);
      gn.noteShift(y, tx, shift);
    }
    L.setTwin(y, { name: yb, shape: tx.shape });
    return true;
  }
  return false;
}

/**
 * y = conv(…) + other, both blocked: the blocked convolution accumulates into `other` (its fused Sum
 * input) when nothing else reads its output. The convolution moves to this point of the list.
 */
function sumFused(L: Layout, y: string, ys: Twin["shape"], ab: string, bb: string): boolean {
  for (const [mine, other] of [
    [ab, bb],
    [bb, ab],
  ] as const) {
    const k = L.convOf.get(mine);
    const conv = k === undefined ? undefined : L.out[k];
    if (!conv || conv.inputs.length > 3 || conv.attributes?.["activation"] || mine === other) continue;
    const plain = [...L.twins].find(([, tw]) => tw.name === mine)?.[0];
    if (plain === undefined || L.readBy(plain).length !== 1) continue;
    L.out[k!] = null;
    const inputs = [conv.inputs[0]!, conv.inputs[1]!, conv.inputs[2] ?? "", other];
    const yb = L.fresh("conv_sum_blocked", ys);
    L.emit({ ...conv, inputs, outputs: [yb] });
    L.convOf.set(yb, L.out.length - 1);
    L.setTwin(y, { name: yb, shape: ys });
    return true;
  }
  return false;
}

/** A Reshape's target shape, from the lowering's shapes or its (explicit) shape initializer. */
function reshapeTarget(L: Layout, n: OnnxNode): readonly number[] | undefined {
  const known = L.shapeOf(n.outputs[0]!);
  if (known) return known;
  const d = L.c.constant(n.inputs[1]!);
  if (!(d instanceof BigInt64Array)) return undefined;
  const s = Array.from(d, Number);
  return s.every((q) => q > 0) ? s : undefined;
}

/** NumPy broadcasting of shapes that are known to be compatible (the graph was shape-checked). */
function broadcast(shapes: readonly (readonly number[])[]): number[] {
  const rank = Math.max(...shapes.map((s) => s.length));
  return Array.from({ length: rank }, (_, i) => Math.max(...shapes.map((s) => s[s.length - rank + i] ?? 1)));
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
