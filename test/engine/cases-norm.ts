/** Primitive test cases: standardize and invStdDev (the fused normalization under group and layer norm), nearest upsampling. */
import type { ArgSpec, OpCase } from "../support/check.ts";

const arg = (shape: readonly number[]): ArgSpec => ({ shape });

function std(name: string, shape: readonly number[], axis: number, eps: number): OpCase {
  return {
    name: `standardize ${name}`,
    args: { x: arg(shape) },
    build: (t, g) => g.apply("standardize", [t["x"]!], { axis, eps }),
  };
}

function invStd(name: string, shape: readonly number[], axis: number, eps: number): OpCase {
  return {
    name: `invStdDev ${name}`,
    args: { x: arg(shape) },
    build: (t, g) => g.apply("invStdDev", [t["x"]!], { axis, eps }),
  };
}

function upsample(shape: readonly number[], scale: number): OpCase {
  return {
    name: `upsampleNearest [${shape.join(",")}] ×${scale}`,
    args: { x: arg(shape) },
    build: (t, g) => g.apply("upsampleNearest", [t["x"]!], { scale }),
  };
}

export const normCases: { standardize: OpCase[]; invStdDev: OpCase[]; upsampleNearest: OpCase[] } = {
  invStdDev: [
    invStd("[2,3,8] over the last axis", [2, 3, 8], 2, 1e-5),
    invStd("[2,4,6] over axes 1..", [2, 4, 6], 1, 1e-5),
    invStd("[3,5] large eps", [3, 5], 1, 0.5),
  ],
  upsampleNearest: [upsample([2, 3, 2, 3], 2), upsample([1, 2, 3, 2], 3), upsample([1, 1, 2, 2], 1)],
  standardize: [
    std("[2,3,8] over the last axis (layer norm)", [2, 3, 8], 2, 1e-5),
    std("[2,4,6] over axes 1.. (group norm on [N, G, ·])", [2, 4, 6], 1, 1e-5),
    std("[3,5] large eps", [3, 5], 1, 0.5),
    std("[2,2,3,3] over axes 2..", [2, 2, 3, 3], 2, 1e-6),
  ],
};
