/**
 * The state of the "keepBlocked" rewrite (nchwc-layout.ts), shared with its group-norm rules
 * (nchwc-groupnorm.ts): the nodes written so far, each plain value's blocked twin, the known shapes,
 * and the helpers that emit blocked nodes.
 */
import type { RewriteCtx } from "../context.ts";
import { addReader, type OnnxAttr, type OnnxNode } from "../proto.ts";
import { depthwise, int, NCHWC_DOMAIN, same } from "./nchwc.ts";

export interface LayoutCtx extends RewriteCtx {
  /** ONNX Runtime's channel block (8 with AVX2). */
  block: number;
}

/** A plain value's blocked twin: reshape(value, shape) is the blocked tensor `name`'s plain form. */
export interface Twin {
  name: string;
  shape: readonly [number, number, number, number];
}

const size = (s: readonly number[]): number => s.reduce((p, q) => p * q, 1);

/** The rewrite's state: the nodes written so far, each value's blocked twin, the known shapes. */
export class Layout {
  readonly B: number;
  readonly out: (OnnxNode | null)[] = [];
  readonly twins = new Map<string, Twin>();
  readonly shapes = new Map<string, readonly number[]>();
  /** The blocked convolution (index into `out`) that produced a blocked value, for Sum fusion. */
  readonly convOf = new Map<string, number>();
  private readonly readers = new Map<string, OnnxNode[]>();

  constructor(
    nodes: readonly OnnxNode[],
    readonly c: LayoutCtx,
  ) {
    this.B = c.block;
    for (const n of nodes) for (const i of n.inputs) if (i) addReader(this.readers, i, n);
  }

  /** The nodes of the original list that read `v`. */
  readBy(v: string): OnnxNode[] {
    return this.readers.get(v) ?? [];
  }

  shapeOf(v: string): readonly number[] | undefined {
    return this.shapes.get(v) ?? this.c.shape(v);
  }

  emit(n: OnnxNode): void {
    this.out.push(n);
  }

  node(
    opType: string,
    inputs: readonly string[],
    outputs: readonly string[],
    attributes?: Record<string, OnnxAttr>,
    domain?: string,
  ): void {
    this.emit({
      opType,
      inputs,
      outputs,
      ...(attributes ? { attributes } : {}),
      ...(domain ? { domain } : {}),
    });
  }

  blockable(s: readonly number[] | undefined): s is readonly [number, number, number, number] {
    return !!s && s.length === 4 && s[1]! % this.B === 0 && s[1]! > 0;
  }

  /** A fresh value name of the given shape. */
  fresh(hint: string, s4: readonly number[]): string {
    const name = this.c.tmp(hint);
    this.shapes.set(name, s4);
    return name;
  }

  /** Records `plain`'s twin and emits the nodes that would materialize `plain` (dropped if unread). */
  setTwin(plain: string, twin: Twin): void {
    this.twins.set(plain, twin);
    this.shapes.set(twin.name, twin.shape);
    const s = this.shapeOf(plain);
    if (!s) throw new Error(`keepBlocked: no shape for ${plain}`);
    const channels = { channels: int(twin.shape[1]) };
    if (same(s, twin.shape)) {
      this.node("ReorderOutput", [twin.name], [plain], channels, NCHWC_DOMAIN);
    } else {
      const t = this.c.tmp("plain4");
      this.node("ReorderOutput", [twin.name], [t], channels, NCHWC_DOMAIN);
      this.node("Reshape", [t, this.c.i64(s)], [plain]);
    }
  }

  /** The blocked tensor holding a plain value of exactly shape `s4` (reordered here if needed). */
  blockedAs(v: string, s4: readonly number[]): string {
    const t = this.twins.get(v);
    if (t && same(t.shape, s4)) return t.name;
    const src = t ? this.reshapeTwin(t, s4) : undefined;
    if (src) return src;
    const name = this.fresh("x_blocked", s4);
    this.node("ReorderInput", [v], [name], undefined, NCHWC_DOMAIN);
    this.twins.set(v, { name, shape: s4 as Twin["shape"] });
    return name;
  }

  /** The same blocked data viewed as another 4-D shape (same element order, channels in blocks). */
  private reshapeTwin(t: Twin, s4: readonly number[]): string | undefined {
    if (!this.blockable(s4) || size(s4) !== size(t.shape) || s4[2] !== t.shape[2] || s4[3] !== t.shape[3])
      return undefined;
    const name = this.fresh("blocked_view", s4);
    this.node("Reshape", [t.name, this.c.i64(s4)], [name]);
    return name;
  }

  /** Per-(sample, channel) y = x·scale + shift on blocked x [N, C, H, W]; scale/shift [N·C] or absent. */
  affine(xb: string, s4: Twin["shape"], scale: string | undefined, shift: string | undefined): string {
    const [N, C, H, W] = s4;
    const nc = N * C;
    const view = this.fresh("nc_view", [1, nc, H, W]);
    this.node("Reshape", [xb, this.c.i64([1, nc, H, W])], [view]);
    let w: string;
    if (scale) {
      w = this.c.tmp("dw_weight");
      this.node("Reshape", [scale, this.c.i64([nc, 1, 1, 1])], [w]);
    } else w = this.c.f32([nc, 1, 1, 1], new Float32Array(nc).fill(1));
    const y = this.fresh("nc_affine", [1, nc, H, W]);
    this.node("Conv", shift ? [view, w, shift] : [view, w], [y], depthwise(nc, 1, 1), NCHWC_DOMAIN);
    const yb = this.fresh("affine_blocked", s4);
    this.node("Reshape", [y, this.c.i64(s4)], [yb]);
    return yb;
  }

  /** A per-channel operand ([C], [1|N, C, 1, 1], …) of an op over [N, C, H, W], as an [N·C] vector. */
  perSample(v: string, s4: Twin["shape"]): string | undefined {
    const s = this.shapeOf(v);
    const [N, C] = s4;
    if (!s || s.length > 4) return undefined;
    const p = [...new Array<number>(4 - s.length).fill(1), ...s];
    if (p[1] !== C || p[2] !== 1 || p[3] !== 1 || (p[0] !== 1 && p[0] !== N)) return undefined;
    let full = v;
    if (p[0] !== N) {
      full = this.c.tmp("per_channel_n");
      this.node("Expand", [v, this.c.i64([N, C, 1, 1])], [full]);
    }
    const flat = this.c.tmp("per_sample");
    this.node("Reshape", [full, this.c.i64([N * C])], [flat]);
    return flat;
  }
}
