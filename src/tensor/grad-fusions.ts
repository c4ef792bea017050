/**
 * The "fuse-groupnorm-grad" backward pass: the gradient of a group norm with its affine computed in
 * one go instead of node by node. With the pass on (`GradOptions.passes`), `grad` asks it at every
 * node first; where the pattern ends at that node, its inputs get their gradients directly and the
 * pattern's inner nodes receive none (so the walk skips them).
 *
 * A pattern is only taken when each inner value is read by the next node of the pattern alone:
 * another reader would need the gradient of that inner value, which a fused rule never forms.
 */
import type { BackwardPass } from "./backward.ts";
import { sameShape } from "./host.ts";
import * as o from "./ops.ts";
import type { Node, Tensor } from "./symbolic.ts";

/**
 * A group norm with its per-channel affine, as `groupNorm` traces it:
 *
 *   grouped = reshape(x, [N, G, R]);  s = standardize(grouped);  y = reshape(s, x.shape)
 *   out = y ⊙ w + b                   (w, b: [1, C, 1, …])
 */
interface GroupNormAffine {
  x: Tensor;
  grouped: Tensor;
  eps: number;
  y: Tensor;
  w: Tensor;
  b: Tensor;
}

const channelShaped = (t: Tensor, x: Tensor): boolean =>
  t.rank === x.rank && t.shape.every((d, i) => d === (i === 1 ? x.shape[1] : 1));

const sameShapeAs = (a: Tensor, b: Tensor): boolean => sameShape(a.shape, b.shape);

/** A binary node's inputs in both orders (add and mul commute). */
const bothOrders = (n: Node): [Tensor, Tensor][] => [
  [n.inputs[0]!, n.inputs[1]!],
  [n.inputs[1]!, n.inputs[0]!],
];

function matchGroupNormAffine(n: Node, readers: (t: Tensor) => number): GroupNormAffine | null {
  if (n.prim !== "add") return null;
  const g = n.output.graph;
  for (const [m, b] of bothOrders(n)) {
    const mul = g.producer(m);
    if (mul?.prim !== "mul" || readers(m) !== 1 || !sameShapeAs(m, n.output)) continue;
    for (const [y, w] of bothOrders(mul)) {
      const back = g.producer(y);
      if (back?.prim !== "reshape" || readers(y) !== 1 || !sameShapeAs(y, n.output)) continue;
      const s = back.inputs[0]!;
      const std = g.producer(s) as Node<"standardize"> | undefined;
      if (std?.prim !== "standardize" || readers(s) !== 1) continue;
      const grouped = std.inputs[0]!;
      const split = g.producer(grouped);
      if (split?.prim !== "reshape" || readers(grouped) !== 1) continue;
      const x = split.inputs[0]!;
      const [N, C] = x.shape as [number, number];
      const G = grouped.shape[1]!;
      if (x.rank < 2 || !sameShapeAs(x, y) || std.attrs.axis !== 2 || grouped.rank !== 3) continue;
      if (grouped.shape[0] !== N || C % G !== 0 || !channelShaped(w, x) || !channelShaped(b, x)) continue;
      return { x, grouped, eps: std.attrs.eps, y, w, b };
    }
  }
  return null;
}

/**
 * The group norm + affine backward with the per-channel sums shared: with ĝ = g·w and ŷ the
 * standardized x, r = 1/σ per sample and group, and mean_G over a group's channels and pixels,
 *
 *   dx = r·(ĝ − mean_G ĝ − ŷ·mean_G(ĝ ŷ))  =  (r·w)·g + (−r·mean_G(ĝ ŷ))·ŷ + (−r·mean_G ĝ)
 *
 * and mean_G ĝ = Σ_c w_c S1[n, c] / count, mean_G(ĝ ŷ) = Σ_c w_c S2[n, c] / count with
 * S1 = Σ_pixels g, S2 = Σ_pixels g·ŷ — the same sums that give dw (Σ_n S2) and db (Σ_n S1). Over the
 * full activations that is 8 reads and 4 writes where the node-by-node rules make 14 and 7.
 */
function groupNormAffineGrad(
  p: GroupNormAffine,
  g: Tensor,
  wants: (t: Tensor) => boolean,
): [Tensor, Tensor][] {
  const { x, y, w, b } = p;
  const [N, C] = x.shape as [number, number];
  const G = p.grouped.shape[1]!;
  const Cg = C / G;
  const pixels = x.shape.slice(2).reduce((a, d) => a * d, 1);
  const spatial = x.shape.slice(2).map((_, i) => i + 2);
  const sumPixels = (t: Tensor): Tensor => (spatial.length ? o.sum(t, spatial) : t); // [N, C]
  const out: [Tensor, Tensor][] = [];
  const S1 = sumPixels(g);
  const S2 = sumPixels(o.mul(g, y));
  if (wants(b)) out.push([b, o.reshape(o.sum(S1, [0]), b.shape)]);
  if (wants(w)) out.push([w, o.reshape(o.sum(S2, [0]), w.shape)]);
  if (wants(x)) {
    const gamma = o.reshape(w, [1, G, Cg]);
    const k = -1 / (Cg * pixels);
    const r = o.reshape(o.invStdDev(p.grouped, 2, p.eps), [N, G, 1]);
    const mg = o.sum(o.mul(o.reshape(S1, [N, G, Cg]), gamma), [2], true); // [N, G, 1]
    const mgy = o.sum(o.mul(o.reshape(S2, [N, G, Cg]), gamma), [2], true);
    const a = o.reshape(o.mul(r, gamma), [N, G, Cg, 1]);
    const by = o.reshape(o.mul(r, o.mul(mgy, k)), [N, G, 1, 1]);
    const c = o.reshape(o.mul(r, o.mul(mg, k)), [N, G, 1, 1]);
    const view = (t: Tensor): Tensor => o.reshape(t, [N, G, Cg, pixels]);
    const dx = o.add(o.add(o.mul(view(g), a), o.mul(view(y), by)), c);
    out.push([x, o.reshape(dx, x.shape)]);
  }
  return out;
}

/** The gradients the group norm + affine ending at `n` gives its inputs, or null (BackwardHooks.fuse). */
function fusedGradient(
  n: Node,
  g: Tensor,
  readers: (t: Tensor) => number,
  wants: (t: Tensor) => boolean,
): [Tensor, Tensor][] | null {
  const gn = matchGroupNormAffine(n, readers);
  return gn ? groupNormAffineGrad(gn, g, wants) : null;
}

export const fuseGroupNormGrad: BackwardPass = {
  name: "fuse-groupnorm-grad",
  begin: () => ({ fuse: fusedGradient }),
};
