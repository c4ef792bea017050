/**
 * Gradient rules: for each primitive, the vector–Jacobian product. Given the node and the gradient
 * `g` of its output, a rule returns the gradient of each input (null where an input has none, or
 * where `wants[i]` says nobody needs it). Rules build their results from the same traced ops, so
 * backward graphs are ordinary graphs and lower to ONNX like forward ones.
 *
 * A rule reads a forward value through `ctx.read` where a backward pass (backward.ts) may hand it a
 * recomputed copy instead (recompute.ts); without such a pass that is the forward value itself.
 */
import type { BackwardCtx } from "./backward.ts";
import * as o from "./ops.ts";
import type { PrimAttrs, PrimName } from "./primitives.ts";
import type { Node, Tensor } from "./symbolic.ts";

type Grads = (Tensor | null)[];
type Rule<K extends PrimName> = (
  node: Node<K>,
  g: Tensor,
  wants: readonly boolean[],
  ctx: BackwardCtx,
) => Grads;

const when = (want: boolean | undefined, f: () => Tensor): Tensor | null => (want ? f() : null);

function inputs2(n: Node): [Tensor, Tensor] {
  return [n.inputs[0]!, n.inputs[1]!];
}

/** Reduction axes (possibly negative) kept as size-1 dimensions, so `g` can broadcast back over the input. */
function keepShape(x: Tensor, axes: readonly number[]): number[] {
  const set = axes.map((a) => (a < 0 ? a + x.rank : a));
  return x.shape.map((d, i) => (set.includes(i) ? 1 : d));
}

export const gradRules: { [K in PrimName]: Rule<K> } = {
  add: (n, g, w) => {
    const [a, b] = inputs2(n);
    return [when(w[0], () => o.unbroadcast(g, a.shape)), when(w[1], () => o.unbroadcast(g, b.shape))];
  },
  sub: (n, g, w) => {
    const [a, b] = inputs2(n);
    return [when(w[0], () => o.unbroadcast(g, a.shape)), when(w[1], () => o.unbroadcast(o.neg(g), b.shape))];
  },
  // each operand's gradient reads the other, which a backward pass may recompute (recompute.ts)
  mul: (n, g, w, ctx) => {
    const [a, b] = inputs2(n);
    return [
      when(w[0], () => o.unbroadcast(o.mul(g, ctx.read(b, g, "mul-grad")), a.shape)),
      when(w[1], () => o.unbroadcast(o.mul(g, ctx.read(a, g, "mul-grad")), b.shape)),
    ];
  },
  div: (n, g, w) => {
    // y = a / b: da = g / b, db = -g a / b² = -g y / b
    const [a, b] = inputs2(n);
    return [
      when(w[0], () => o.unbroadcast(o.div(g, b), a.shape)),
      when(w[1], () => o.unbroadcast(o.neg(o.div(o.mul(g, n.output), b)), b.shape)),
    ];
  },
  maximum: (n, g, w) => {
    // ties send the gradient to the first operand
    const [a, b] = inputs2(n);
    const bWins = o.less(a, b);
    return [
      when(w[0], () => o.unbroadcast(o.where(bWins, 0, g), a.shape)),
      when(w[1], () => o.unbroadcast(o.where(bWins, g, 0), b.shape)),
    ];
  },
  minimum: (n, g, w) => {
    const [a, b] = inputs2(n);
    const bWins = o.greater(a, b);
    return [
      when(w[0], () => o.unbroadcast(o.where(bWins, 0, g), a.shape)),
      when(w[1], () => o.unbroadcast(o.where(bWins, g, 0), b.shape)),
    ];
  },
  less: () => [null, null],
  greater: () => [null, null],
  equal: () => [null, null],
  where: (n, g, w) => {
    const [c, a, b] = n.inputs as [Tensor, Tensor, Tensor];
    return [
      null,
      when(w[1], () => o.unbroadcast(o.where(c, g, 0), a.shape)),
      when(w[2], () => o.unbroadcast(o.where(c, 0, g), b.shape)),
    ];
  },
  neg: (_n, g) => [o.neg(g)],
  exp: (n, g) => [o.mul(g, n.output)],
  log: (n, g) => [o.div(g, n.inputs[0]!)],
  sqrt: (n, g) => [o.div(o.mul(g, 0.5), n.output)],
  tanh: (n, g) => [o.mul(g, o.sub(1, o.square(n.output)))],
  sigmoid: (n, g) => [o.mul(g, o.mul(n.output, o.sub(1, n.output)))],
  // y = x·s, s = sigmoid(x):  dy/dx = s + x·s·(1 − s) = s + y·(1 − s). s is a Sigmoid of its own
  // (ONNX Runtime merges it with the forward's). Where a backward pass recomputes x, y is
  // recomputed too (or taken from a conv's weight gradient, which recomputed it first), so the
  // forward keeps none of x, s, y for the backward pass
  silu: (n, g, _w, ctx) => {
    const x = n.inputs[0]!;
    const u = ctx.read(x, g, "silu-grad");
    const s = o.sigmoid(u);
    const y = u === x ? n.output : (ctx.recomputed(n.output) ?? o.mul(u, s));
    return [o.mul(g, o.add(s, o.mul(y, o.sub(1, s))))];
  },
  // y = x·Φ(x):  dy/dx = Φ(x) + x·φ(x) = ½(1 + erf(x/√2)) + x·exp(−x²/2)/√(2π), from x alone
  gelu: (n, g) => {
    const x = n.inputs[0]!;
    const cdf = o.mul(o.add(o.erf(o.mul(x, Math.SQRT1_2)), 1), 0.5);
    const pdf = o.mul(o.exp(o.mul(o.square(x), -0.5)), 1 / Math.sqrt(2 * Math.PI));
    return [o.mul(g, o.add(cdf, o.mul(x, pdf)))];
  },
  // y = ½x(1 + tanh(u)) = x·σ(z), u = k(x + a·x³), z = 2u:  dy/dx = σ + x·σ(1 − σ)·z'
  //   = σ·(1 + (1 − σ)·x·z'), z' = 2k(1 + 3a·x²) — 13 elementwise kernels where the tanh form's
  //   ½(1 + t) + ½x(1 − t²)·u' takes 17, each a pass over the (wide) MLP activation
  geluTanh: (n, g) => {
    const x = n.inputs[0]!;
    const k2 = 2 * Math.sqrt(2 / Math.PI);
    const a = 0.044715;
    const x2 = o.square(x);
    const s = o.sigmoid(o.mul(x, o.add(o.mul(x2, k2 * a), k2))); // σ(z)
    const xdz = o.mul(x, o.add(o.mul(x2, 3 * k2 * a), k2)); // x·z'
    return [o.mul(g, o.mul(s, o.add(o.mul(o.sub(1, s), xdz), 1)))];
  },
  // d/dx erf(x) = 2/√π · exp(−x²)
  erf: (n, g) => [o.mul(g, o.mul(o.exp(o.neg(o.square(n.inputs[0]!))), 2 / Math.sqrt(Math.PI)))],
  sin: (n, g) => [o.mul(g, o.cos(n.inputs[0]!))],
  cos: (n, g) => [o.neg(o.mul(g, o.sin(n.inputs[0]!)))],
  abs: (n, g) => [o.where(o.less(n.inputs[0]!, 0), o.neg(g), g)],
  cast: (n, g) => [n.inputs[0]!.dtype === "float32" && n.output.dtype === "float32" ? g : null],
  sum: (n, g) => {
    const x = n.inputs[0]!;
    return [o.expand(o.reshape(g, keepShape(x, n.attrs.axes)), x.shape)];
  },
  max: (n, g) => {
    // the gradient is shared equally between the positions that attain the maximum
    const x = n.inputs[0]!;
    const keep = keepShape(x, n.attrs.axes);
    const mask = o.cast(o.equal(x, o.reshape(n.output, keep)), "float32");
    const count = o.sum(mask, n.attrs.axes, true);
    return [o.mul(mask, o.div(o.reshape(g, keep), count))];
  },
  reshape: (n, g) => [o.reshape(g, n.inputs[0]!.shape)],
  transpose: (n, g) => {
    const inv: number[] = [];
    n.attrs.perm.forEach((p, i) => {
      inv[p] = i;
    });
    return [o.transpose(g, inv)];
  },
  expand: (n, g) => [o.unbroadcast(g, n.inputs[0]!.shape)],
  slice: (n, g) => [sliceGrad(n, g)],
  pad: (n, g) => {
    const x = n.inputs[0]!;
    const r = x.rank;
    let out = g;
    for (let i = 0; i < r; i++) out = o.slice(out, i, n.attrs.pads[i]!, n.attrs.pads[i]! + x.shape[i]!);
    return [out];
  },
  concat: (n, g) => {
    const axis = n.attrs.axis < 0 ? n.attrs.axis + g.rank : n.attrs.axis;
    let at = 0;
    return n.inputs.map((x) => {
      const piece = o.slice(g, axis, at, at + x.shape[axis]!);
      at += x.shape[axis]!;
      return piece;
    });
  },
  gather: (n, g, w) => {
    const [table, idx] = inputs2(n);
    return [when(w[0], () => o.scatterAdd(idx, g, table.shape)), null];
  },
  scatterAdd: (n, g, w) => [null, when(w[1], () => o.gather(g, n.inputs[0]!))],
  matmul: (n, g, w, ctx) => {
    const [a, b] = inputs2(n);
    const tA = (t: Tensor) =>
      o.transpose(
        t,
        [...t.shape.keys()].map((i) => (i < t.rank - 2 ? i : 2 * t.rank - 3 - i)),
      );
    return [
      when(w[0], () => o.unbroadcast(o.matmul(g, tA(b)), a.shape)),
      when(w[1], () => {
        if (b.rank === 2 && a.rank > 2) {
          // a linear layer over a batch: fold the batch into one matrix product
          const k = a.shape[a.rank - 1]!;
          const m = g.shape[g.rank - 1]!;
          const x = ctx.read(a, g, "matmul-weight-grad");
          return o.matmul(o.transpose(o.reshape(x, [-1, k]), [1, 0]), o.reshape(g, [-1, m]));
        }
        return o.unbroadcast(o.matmul(tA(a), g), b.shape);
      }),
    ];
  },
  conv: (n, g, w, ctx) => {
    const [x, wt] = inputs2(n);
    const a = n.attrs;
    return [
      when(w[0], () => o.convTranspose(g, wt, a, x.shape)),
      when(w[1], () => o.convWeightGrad(ctx.read(x, g, "conv-weight-grad"), g, a, wt.shape)),
      when(w[2], () => o.sum(g, [0, 2, 3])),
    ];
  },
  convTranspose: (n, gy, w) => {
    // y = convᵀ(g, W) is adjoint to h ↦ conv(h, W): dg = conv(gy, W), dW = weightGrad(gy, g)
    const [g, wt] = inputs2(n);
    const { outShape: _o, ...a } = n.attrs;
    return [when(w[0], () => o.conv2dRaw(gy, wt, a)), when(w[1], () => o.convWeightGrad(gy, g, a, wt.shape))];
  },
  convWeightGrad: (n, gy, w) => {
    // dW = weightGrad(x, g) is bilinear: <dW, H> = <g, conv(x, H)> = <convᵀ(g, H), x>
    const [x, g] = inputs2(n);
    const { wShape: _w, ...a } = n.attrs;
    return [when(w[0], () => o.convTranspose(g, gy, a, x.shape)), when(w[1], () => o.conv2dRaw(x, gy, a))];
  },
  softmax: (n, g) => {
    // dx = y ⊙ (g − Σ g ⊙ y)
    const y = n.output;
    return [o.mul(y, o.sub(g, o.sum(o.mul(g, y), n.attrs.axis, true)))];
  },
  standardize: (n, g) => {
    // y = (x − μ)·r, r = 1/√(var + ε):  dx = r·(g − mean(g) − y·mean(g·y))
    const x = n.inputs[0]!;
    const y = n.output;
    const axes = x.shape.map((_, i) => i).filter((i) => i >= n.attrs.axis);
    const r = o.invStdDev(x, n.attrs.axis, n.attrs.eps);
    const inner = o.sub(o.sub(g, o.mean(g, axes, true)), o.mul(y, o.mean(o.mul(g, y), axes, true)));
    return [o.mul(r, inner)];
  },
  invStdDev: (n, g) => {
    // r = (var + ε)^(−1/2), dvar/dx = 2(x − μ)/N:  dr/dx = −r³·(x − μ)/N
    const x = n.inputs[0]!;
    const axes = x.shape.map((_, i) => i).filter((i) => i >= n.attrs.axis);
    const count = axes.reduce((p, i) => p * x.shape[i]!, 1);
    const r = n.output;
    const scale = o.mul(g, o.mul(o.mul(r, o.mul(r, r)), -1 / count));
    return [o.mul(scale, o.sub(x, o.mean(x, axes, true)))];
  },
  upsampleNearest: (n, g) => {
    // every input pixel was copied to an s×s block: its gradient is the block's sum
    const [b, c, h, w] = n.inputs[0]!.shape as [number, number, number, number];
    const s = n.attrs.scale;
    return [o.sum(o.reshape(g, [b, c, h, s, w, s]), [3, 5])];
  },
};

/** The gradient of x[start:end:step]: g scattered back to its positions, zeros elsewhere. */
function sliceGrad(n: Node<"slice">, g: Tensor): Tensor {
  const x = n.inputs[0]!;
  let out = g;
  n.attrs.axes.forEach((axis, i) => {
    const ax = axis < 0 ? axis + x.rank : axis;
    const start = n.attrs.starts[i]!;
    const step = n.attrs.steps[i] ?? 1;
    const d = x.shape[ax]!;
    const k = out.shape[ax]!;
    if (step > 1) {
      // interleave zeros: [..k..] → [..k, 1..] → pad to [..k, step..] → [..k·step..]
      const s1 = [...out.shape.slice(0, ax + 1), 1, ...out.shape.slice(ax + 1)];
      const pads = new Array<number>(2 * (out.rank + 1)).fill(0);
      pads[out.rank + 1 + ax + 1] = step - 1;
      const spread = [...out.shape];
      spread[ax] = k * step;
      out = o.reshape(o.pad(o.reshape(out, s1), pads), spread);
      if (start + k * step > d) out = o.slice(out, ax, 0, d - start);
    }
    const len = out.shape[ax]!;
    const pads = new Array<number>(2 * out.rank).fill(0);
    pads[ax] = start;
    pads[out.rank + ax] = d - start - len;
    out = o.pad(out, pads);
  });
  return out;
}

export type { PrimAttrs };
