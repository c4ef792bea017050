/**
 * Reverse-mode automatic differentiation as a graph transformation.
 *
 * `grad(y, xs)` walks the nodes between `xs` and `y` backwards (the graph is built in topological
 * order), applies each primitive's gradient rule to the gradient of its output and sums the
 * contributions that reach each tensor. The backward nodes are appended to the same graph, so a
 * forward pass, its loss, its gradients and an optimizer update become one ONNX graph.
 */

import type { BackwardCtx, BackwardHooks, BackwardPass } from "./backward.ts";
import { fuseGroupNormGrad } from "./grad-fusions.ts";
import { gradRules } from "./grad-rules.ts";
import { formatShape, sameShape } from "./host.ts";
import * as o from "./ops.ts";
import type { PrimName } from "./primitives.ts";
import { recompute } from "./recompute.ts";
import type { Node, Tensor } from "./symbolic.ts";

type AnyRule = (node: Node, g: Tensor, wants: readonly boolean[], ctx: BackwardCtx) => (Tensor | null)[];

/** The backward passes `grad` runs unless told otherwise: both, as every train step has used. */
export const DEFAULT_BACKWARD_PASSES: readonly BackwardPass[] = [fuseGroupNormGrad, recompute];

export interface GradOptions {
  /** The named backward passes to run (backward.ts); default DEFAULT_BACKWARD_PASSES, [] for none. */
  passes?: readonly BackwardPass[];
}

/** The context the rules see: each read goes to the passes in order, the first copy wins. */
function backwardCtx(hooks: readonly BackwardHooks[]): BackwardCtx {
  return {
    read(x, dep, site) {
      for (const h of hooks) {
        const r = h.read?.(x, dep, site);
        if (r !== undefined && r !== x) return r;
      }
      return x;
    },
    recomputed(t) {
      for (const h of hooks) {
        const r = h.recomputed?.(t);
        if (r) return r;
      }
      return undefined;
    },
  };
}

/**
 * Gradients of `y` with respect to each of `xs`. `y` must be a scalar unless a seed gradient
 * `dy` (same shape as `y`) is given. A tensor that `y` does not depend on gets zeros. `opts.passes`
 * names the backward passes (group-norm gradient fusion, recomputation) to run.
 */
export function grad(y: Tensor, xs: readonly Tensor[], dy?: Tensor, opts: GradOptions = {}): Tensor[] {
  const graph = y.graph;
  if (!dy && y.size !== 1)
    throw new Error(`grad: output ${formatShape(y.shape)} is not a scalar; pass a seed gradient`);
  if (y.dtype !== "float32") throw new Error(`grad: output must be float32, got ${y.dtype}`);
  for (const x of xs) {
    if (x.graph !== graph) throw new Error("grad: inputs come from another graph");
    if (x.dtype !== "float32")
      throw new Error(`grad: cannot differentiate with respect to a ${x.dtype} tensor`);
  }
  const yNode = graph.producer(y);
  const end = yNode ? graph.nodes.indexOf(yNode) + 1 : 0;
  const nodes = graph.nodes.slice(0, end);

  // forward: which tensors depend on some x
  const active = new Set<number>(xs.map((x) => x.id));
  for (const n of nodes) {
    if (n.output.dtype === "float32" && n.inputs.some((i) => active.has(i.id))) active.add(n.output.id);
  }

  // how many forward nodes read each value (a fused pattern needs its inner values read once); a
  // value asked for in xs counts as one more reader, so no pattern passes over it
  const readCount = new Map<number, number>();
  const read = (t: Tensor) => readCount.set(t.id, (readCount.get(t.id) ?? 0) + 1);
  for (const n of nodes) n.inputs.forEach(read);
  xs.forEach(read);
  const readers = (t: Tensor): number => readCount.get(t.id) ?? 0;
  const isActive = (t: Tensor): boolean => active.has(t.id);

  const hooks = (opts.passes ?? DEFAULT_BACKWARD_PASSES).map((p) => p.begin());
  const fusers = hooks.filter((h) => h.fuse);
  const ctx = backwardCtx(hooks);
  const grads = new Map<number, Tensor>();
  const accumulate = (t: Tensor, g: Tensor) => {
    const prev = grads.get(t.id);
    grads.set(t.id, prev ? o.add(prev, g) : g);
  };
  accumulate(y, dy ?? o.expand(graph.scalar(1), y.shape));

  for (let i = nodes.length - 1; i >= 0; i--) {
    const n = nodes[i]!;
    const g = grads.get(n.output.id);
    if (!g || !active.has(n.output.id)) continue;
    const fused = fusers.reduce<[Tensor, Tensor][] | null>(
      (done, h) => done ?? h.fuse!(n, g, readers, isActive),
      null,
    );
    if (fused) {
      for (const [x, gx] of fused) accumulate(x, gx);
      continue;
    }
    const wants = n.inputs.map((x) => active.has(x.id));
    const rule = gradRules[n.prim as PrimName] as unknown as AnyRule;
    const gs = rule(n, g, wants, ctx);
    n.inputs.forEach((x, k) => {
      const gx = gs[k];
      if (gx && wants[k]) {
        if (!sameShape(gx.shape, x.shape)) {
          throw new Error(
            `internal: gradient rule of ${n.prim} gave ${formatShape(gx.shape)} for an input of ${formatShape(x.shape)}`,
          );
        }
        accumulate(x, gx);
      }
    });
  }
  return xs.map((x) => grads.get(x.id) ?? o.expand(graph.scalar(0), x.shape));
}

/** The value of a scalar function together with its gradients. */
export function valueAndGrad(y: Tensor, xs: readonly Tensor[]): { value: Tensor; grads: Tensor[] } {
  return { value: y, grads: grad(y, xs) };
}
