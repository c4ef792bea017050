/** Primitive test cases: standardize (the fused normalization under group and layer norm). */
import type { ArgSpec, OpCase } from "../support/check.ts";

const arg = (shape: readonly number[]): ArgSpec => ({ shape });

function std(name: string, shape: readonly number[], axis: number, eps: number): OpCase {
  return {
    name: `standardize ${name}`,
    args: { x: arg(shape) },
    build: (t, g) => g.apply("standardize", [t["x"]!], { axis, eps }),
  };
}

export const normCases: { standardize: OpCase[] } = {
  standardize: [
    std("[2,3,8] over the last axis (layer norm)", [2, 3, 8], 2, 1e-5),
    std("[2,4,6] over axes 1.. (group norm on [N, G, ·])", [2, 4, 6], 1, 1e-5),
    std("[3,5] large eps", [3, 5], 1, 0.5),
    std("[2,2,3,3] over axes 2..", [2, 2, 3, 3], 2, 1e-6),
  ],
};
