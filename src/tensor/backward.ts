/**
 * What autodiff, the gradient rules and the backward passes share (types only, so none of them
 * imports another for its types).
 *
 * A gradient rule computes the vector–Jacobian product of one primitive. A backward pass is a named,
 * opt-in rewrite of how `grad` builds the backward graph — fusing a multi-node pattern's gradient
 * (grad-fusions.ts) or recomputing cheap forward values instead of keeping them (recompute.ts). The
 * caller of `grad` says which passes run (`GradOptions.passes`); each pass keeps its state in the
 * hooks it returns from `begin()`, one set per backward pass, never in module-level variables.
 */
import type { Node, Tensor } from "./symbolic.ts";

/** Where a gradient rule reads a forward value that a backward pass may recompute. */
export type ReadSite =
  /** a convolution's input, read by its weight gradient */
  | "conv-weight-grad"
  /** silu's input, read by silu's gradient */
  | "silu-grad"
  /** an operand of a product, read by the gradient of the other operand */
  | "mul-grad"
  /** a linear layer's input (the left operand of a product with a matrix), read by the matrix's gradient */
  | "matmul-weight-grad";

/** The backward pass a gradient rule runs in. */
export interface BackwardCtx {
  /** The forward value `x` as a rule reads it, once `dep` exists: x itself unless a pass recomputes it. */
  read(x: Tensor, dep: Tensor, site: ReadSite): Tensor;
  /** The copy of the forward value `t` that this backward pass recomputed already, if any. */
  recomputed(t: Tensor): Tensor | undefined;
}

/** The hooks of one backward pass's run of a `BackwardPass`. */
export interface BackwardHooks {
  /**
   * The gradients a fused pattern ending at `n` gives its inputs (for the inputs `wants` names), or
   * null where none ends there. `readers(t)` counts the forward nodes that read t.
   */
  fuse?(
    n: Node,
    g: Tensor,
    readers: (t: Tensor) => number,
    wants: (t: Tensor) => boolean,
  ): [Tensor, Tensor][] | null;
  /** A recomputed copy of `x` for a rule at `site`, or undefined to leave the read to later passes. */
  read?(x: Tensor, dep: Tensor, site: ReadSite): Tensor | undefined;
  /** The recomputed copy of `t` made so far in this backward pass. */
  recomputed?(t: Tensor): Tensor | undefined;
}

export type BackwardPassName = "fuse-groupnorm-grad" | "recompute";

export interface BackwardPass {
  readonly name: BackwardPassName;
  /** Called once per `grad` call: the hooks hold that backward pass's state. */
  begin(): BackwardHooks;
}
