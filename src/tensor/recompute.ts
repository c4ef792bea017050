/**
 * The "recompute" backward pass: forward values that are cheap to compute again from tensors the
 * backward pass keeps anyway are recomputed there instead of being kept from the forward pass.
 *
 * - `x = u·a + b`, a broadcast affine of u with small a and b (a group norm's per-channel scale and
 *   shift, a ResNet's time-embedding scale and shift), read by silu's gradient: u is kept for a's
 *   gradient, so x is two cheap passes away;
 * - `silu(u·a + b)` read by a convolution's weight gradient (a ResNet's group norm + SiLU before each
 *   convolution): one full activation per convolution;
 * - `upsampleNearest(q)` read by a convolution's weight gradient (an upsampler's conv): q is scale²
 *   times smaller;
 * - `gelu(u)` read by a product's gradient (GEGLU's `h · gelu(u)`): u is kept for gelu's own
 *   gradient, so the activation is one pass away (the emoji U-Net's LoRA step: −8 MiB peak RSS);
 * - a linear layer's input read by its weight gradient: `gelu(u)` (a transformer MLP's second
 *   layer: the widest activation of a block) or `u·a + b` (adaLN's modulated norm before the
 *   attention projections and the MLP: u, the norm, is kept for the modulation's own gradient).
 *   The DiT-S train step at batch 64: −640 MiB of live memory (docs/benchmarks.md).
 *
 * Each recomputation is pinned after the gradient flowing in (`after`), so ONNX Runtime schedules it
 * late, and is shared within one backward pass (a conv's weight gradient recomputes silu(u·a + b);
 * silu's own gradient, later in the same pass, reuses that u·a + b) — never with another backward
 * pass over the same graph, whose values must not be pinned after the first one's gradients. The
 * measured effect (peak RSS of the MNIST U-Net's train step, same speed) is in docs/benchmarks.md.
 */
import type { BackwardHooks, BackwardPass, ReadSite } from "./backward.ts";
import * as o from "./ops.ts";
import type { Node, Tensor } from "./symbolic.ts";

const numel = (t: Tensor): number => t.shape.reduce((a, b) => a * b, 1);

/**
 * `x` once more, computed only after `dep` exists: x + 0 taken from dep's first element (a `where`
 * that is 0 whatever that element holds, NaN included). For small x this costs nothing; it pins
 * the computation of whatever uses it after `dep`, in ONNX Runtime's schedule as in any other.
 */
function after(x: Tensor, dep: Tensor): Tensor {
  const first = o.slice(o.reshape(dep, [-1]), 0, 0, 1);
  return o.add(x, o.where(o.less(first, first), first, 0));
}

/** u·a + b again with a taken after `dep`, when x is such an affine with small a and b; else x. */
function recomputeAffine(x: Tensor, dep: Tensor): Tensor {
  const small = (t: Tensor): boolean => numel(t) * 8 <= numel(x);
  const add = x.graph.producer(x);
  if (add?.prim !== "add") return x;
  const [p, q] = add.inputs as [Tensor, Tensor];
  const [m, b] = small(q) ? [p, q] : small(p) ? [q, p] : [null, null];
  const mul =
    m && m.shape.length === x.shape.length && numel(m) === numel(x) ? x.graph.producer(m) : undefined;
  if (mul?.prim !== "mul" || !b) return x;
  const [u, v] = mul.inputs as [Tensor, Tensor];
  const [big, a] = small(v) ? [u, v] : small(u) ? [v, u] : [null, null];
  if (!big || !a || numel(big) !== numel(x)) return x;
  return o.add(o.mul(big, after(a, dep)), b);
}

/** One backward pass's recomputations, by the forward value each stands for. */
function hooks(): BackwardHooks {
  const copies = new WeakMap<Tensor, Tensor>();

  const affine = (x: Tensor, dep: Tensor): Tensor => {
    const done = copies.get(x);
    if (done) return done;
    const r = recomputeAffine(x, dep);
    if (r !== x) copies.set(x, r);
    return r;
  };

  const convInput = (x: Tensor, dep: Tensor): Tensor => {
    const p = x.graph.producer(x);
    if (p?.prim === "upsampleNearest") {
      const done = copies.get(x);
      if (done) return done;
      const r = o.upsampleNearest(after(p.inputs[0]!, dep), (p as Node<"upsampleNearest">).attrs.scale);
      copies.set(x, r);
      return r;
    }
    if (p?.prim !== "silu") return x;
    const done = copies.get(x);
    if (done) return done;
    const u = affine(p.inputs[0]!, dep);
    if (u === p.inputs[0]) return x;
    const r = o.silu(u);
    copies.set(x, r);
    return r;
  };

  // an activation whose gradient reads its input: that input outlives the forward pass anyway
  const activation = (x: Tensor, dep: Tensor): Tensor => {
    const p = x.graph.producer(x);
    if (p?.prim !== "gelu" && p?.prim !== "geluTanh") return x;
    const done = copies.get(x);
    if (done) return done;
    const u = after(p.inputs[0]!, dep);
    const r = p.prim === "gelu" ? o.gelu(u) : o.geluTanh(u);
    copies.set(x, r);
    return r;
  };

  return {
    read: (x: Tensor, dep: Tensor, site: ReadSite): Tensor => {
      if (site === "conv-weight-grad") return convInput(x, dep);
      if (site === "mul-grad") return activation(x, dep);
      if (site === "matmul-weight-grad") {
        const r = activation(x, dep);
        return r !== x ? r : affine(x, dep);
      }
      return affine(x, dep);
    },
    recomputed: (t: Tensor): Tensor | undefined => copies.get(t),
  };
}

export const recompute: BackwardPass = { name: "recompute", begin: hooks };
