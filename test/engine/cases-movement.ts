/**
 * Primitive test cases: movement (reshape, transpose, expand, slice, pad, concat, gather,
 * scatterAdd), matmul and softmax.
 */
import type { PrimAttrs } from "../../src/tensor/primitives.ts";
import type { ArgSpec, Init, OpCase } from "../support/check.ts";

export type MovementPrim =
  | "reshape"
  | "transpose"
  | "expand"
  | "slice"
  | "pad"
  | "concat"
  | "gather"
  | "scatterAdd"
  | "matmul"
  | "softmax";

const arg = (shape: readonly number[], init?: Init, dtype?: ArgSpec["dtype"]): ArgSpec => ({
  shape,
  ...(init ? { init } : {}),
  ...(dtype ? { dtype } : {}),
});

function one<K extends "reshape" | "transpose" | "expand" | "slice" | "pad" | "softmax">(
  prim: K,
  name: string,
  x: ArgSpec,
  attrs: PrimAttrs[K],
): OpCase {
  return { name: `${prim} ${name}`, args: { x }, build: (t, g) => g.apply(prim, [t["x"]!], attrs) };
}

const sliceAttrs = (
  axes: readonly number[],
  starts: readonly number[],
  ends: readonly number[],
  steps: readonly number[],
): PrimAttrs["slice"] => ({ axes, starts, ends, steps });

function matmulCase(sa: readonly number[], sb: readonly number[]): OpCase {
  return {
    name: `matmul [${sa}] @ [${sb}]`,
    args: { a: arg(sa), b: arg(sb) },
    build: (t, g) => g.apply("matmul", [t["a"]!, t["b"]!], {}),
  };
}

export const movementCases: { [K in MovementPrim]: OpCase[] } = {
  reshape: [
    one("reshape", "[2,3,4] → [6,4]", arg([2, 3, 4]), { shape: [6, 4] }),
    one("reshape", "[2,3,4] → [4,1,6]", arg([2, 3, 4]), { shape: [4, 1, 6] }),
    one("reshape", "[1,1] → scalar", arg([1, 1]), { shape: [] }),
    one("reshape", "scalar → [1,1,1]", arg([]), { shape: [1, 1, 1] }),
    one("reshape", "int64 [2,3] → [3,2]", arg([2, 3], undefined, "int64"), { shape: [3, 2] }),
    one("reshape", "bool [2,3] → [6]", arg([2, 3], "bool", "bool"), { shape: [6] }),
    // a 0 in the target is a size, not ONNX's "copy the input's dimension"
    one("reshape", "empty [2,0] → [0,5]", arg([2, 0]), { shape: [0, 5] }),
  ],
  transpose: [
    one("transpose", "[2,3]", arg([2, 3]), { perm: [1, 0] }),
    one("transpose", "[2,3,4] perm 2,0,1", arg([2, 3, 4]), { perm: [2, 0, 1] }),
    one("transpose", "[2,3,4] perm 1,2,0", arg([2, 3, 4]), { perm: [1, 2, 0] }),
    one("transpose", "[2,3,1,4] perm 3,1,0,2", arg([2, 3, 1, 4]), { perm: [3, 1, 0, 2] }),
    one("transpose", "int64 [2,3,2] perm 2,1,0", arg([2, 3, 2], undefined, "int64"), { perm: [2, 1, 0] }),
  ],
  expand: [
    one("expand", "[3,1] → [2,3,4]", arg([3, 1]), { shape: [2, 3, 4] }),
    one("expand", "scalar → [2,3]", arg([]), { shape: [2, 3] }),
    one("expand", "[1,4] → [3,4]", arg([1, 4]), { shape: [3, 4] }),
    one("expand", "[2,1,3] → [2,5,3]", arg([2, 1, 3]), { shape: [2, 5, 3] }),
    one("expand", "bool [1,3] → [2,3]", arg([1, 3], "bool", "bool"), { shape: [2, 3] }),
  ],
  slice: [
    one("slice", "[3,5] axis 1, 1:4", arg([3, 5]), sliceAttrs([1], [1], [4], [1])),
    one("slice", "[6,3] axis 0, 1:6:2 (runs past the end)", arg([6, 3]), sliceAttrs([0], [1], [6], [2])),
    one("slice", "[8,2] axis 0, 0:5:2", arg([8, 2]), sliceAttrs([0], [0], [5], [2])),
    one("slice", "[7] 1:7:3 (ends exactly)", arg([7]), sliceAttrs([0], [1], [7], [3])),
    one("slice", "[2,3,9] axis -1, 2:9:3", arg([2, 3, 9]), sliceAttrs([-1], [2], [9], [3])),
    one(
      "slice",
      "[5,4,7] axes 0,2 with steps 2,3",
      arg([5, 4, 7]),
      sliceAttrs([0, 2], [0, 1], [5, 6], [2, 3]),
    ),
    one("slice", "[4,6] axes 1,0 (out of order)", arg([4, 6]), sliceAttrs([1, 0], [2, 1], [6, 3], [1, 1])),
    one("slice", "int64 [6] 1:5:2", arg([6], undefined, "int64"), sliceAttrs([0], [1], [5], [2])),
  ],
  pad: [
    one("pad", "[2,3] begin 1 end 2", arg([2, 3]), { pads: [1, 0, 0, 2] }),
    one("pad", "[2,3,2] all sides", arg([2, 3, 2]), { pads: [0, 1, 2, 1, 0, 3] }),
    one("pad", "[1,2,3,3] spatial", arg([1, 2, 3, 3]), { pads: [0, 0, 1, 2, 0, 0, 2, 1] }),
    one("pad", "int64 [3]", arg([3], undefined, "int64"), { pads: [2, 1] }),
  ],
  concat: [
    {
      name: "concat two on axis 1",
      args: { a: arg([2, 3]), b: arg([2, 2]) },
      build: (t, g) => g.apply("concat", [t["a"]!, t["b"]!], { axis: 1 }),
    },
    {
      name: "concat three on axis 0",
      args: { a: arg([1, 2, 3]), b: arg([3, 2, 3]), c: arg([2, 2, 3]) },
      build: (t, g) => g.apply("concat", [t["a"]!, t["b"]!, t["c"]!], { axis: 0 }),
    },
    {
      name: "concat on negative axis -1",
      args: { a: arg([2, 2, 1]), b: arg([2, 2, 3]) },
      build: (t, g) => g.apply("concat", [t["a"]!, t["b"]!], { axis: -1 }),
    },
    {
      name: "concat the same tensor twice",
      args: { a: arg([2, 3]) },
      build: (t, g) => g.apply("concat", [t["a"]!, t["a"]!], { axis: 0 }),
    },
    {
      name: "concat int64",
      args: { a: arg([2], undefined, "int64"), b: arg([3], undefined, "int64") },
      build: (t, g) => g.apply("concat", [t["a"]!, t["b"]!], { axis: 0 }),
    },
  ],
  gather: [
    {
      name: "gather [5,3] by [4] with repeats",
      args: { x: arg([5, 3]), i: arg([4], [3, 0, 3, 4], "int64") },
      build: (t, g) => g.apply("gather", [t["x"]!, t["i"]!], {}),
    },
    {
      name: "gather [4,2,3] by [2,3]",
      args: { x: arg([4, 2, 3]), i: arg([2, 3], [1, 1, 0, 3, 2, 1], "int64") },
      build: (t, g) => g.apply("gather", [t["x"]!, t["i"]!], {}),
    },
    {
      name: "gather [6] by scalar",
      args: { x: arg([6]), i: arg([], [4], "int64") },
      build: (t, g) => g.apply("gather", [t["x"]!, t["i"]!], {}),
    },
    {
      // ONNX Gather counts negative indices from the end; the gradient's scatter must agree
      name: "gather [4,2] by negative indices",
      args: { x: arg([4, 2]), i: arg([3], [-1, 0, -4], "int64") },
      build: (t, g) => g.apply("gather", [t["x"]!, t["i"]!], {}),
    },
    {
      name: "gather int64 table",
      args: { x: arg([3, 2], undefined, "int64"), i: arg([2], [2, 0], "int64") },
      build: (t, g) => g.apply("gather", [t["x"]!, t["i"]!], {}),
    },
  ],
  scatterAdd: [
    {
      name: "scatterAdd [5,2] into [3,2] with repeats",
      args: { i: arg([5], [2, 0, 2, 2, 1], "int64"), u: arg([5, 2]) },
      build: (t, g) => g.apply("scatterAdd", [t["i"]!, t["u"]!], { shape: [3, 2] }),
    },
    {
      name: "scatterAdd [2,2] into [4]",
      args: { i: arg([2, 2], [3, 0, 3, 3], "int64"), u: arg([2, 2]) },
      build: (t, g) => g.apply("scatterAdd", [t["i"]!, t["u"]!], { shape: [4] }),
    },
    {
      name: "scatterAdd [3,2,2] into [5,2,2] (rows never hit stay 0)",
      args: { i: arg([3], [4, 1, 4], "int64"), u: arg([3, 2, 2]) },
      build: (t, g) => g.apply("scatterAdd", [t["i"]!, t["u"]!], { shape: [5, 2, 2] }),
    },
    {
      name: "scatterAdd int64 updates (a histogram)",
      args: { i: arg([6], [1, 3, 1, 0, 1, 3], "int64"), u: arg([6], { int: [1, 1] }, "int64") },
      build: (t, g) => g.apply("scatterAdd", [t["i"]!, t["u"]!], { shape: [4] }),
    },
  ],
  matmul: [
    matmulCase([3, 4], [4, 5]),
    matmulCase([2, 3, 4], [4, 5]),
    matmulCase([2, 3, 4], [2, 4, 5]),
    matmulCase([2, 1, 3, 4], [3, 4, 2]),
    matmulCase([4, 5], [2, 5, 3]),
    matmulCase([1, 1], [1, 3]),
  ],
  softmax: [
    one("softmax", "[2,5] axis 1", arg([2, 5]), { axis: 1 }),
    one("softmax", "[3,4,2] axis 0", arg([3, 4, 2]), { axis: 0 }),
    one("softmax", "[3,4,2] axis 1", arg([3, 4, 2]), { axis: 1 }),
    one("softmax", "[2,3] axis -1", arg([2, 3]), { axis: -1 }),
    // large logits: a naive exp overflows in float32
    one("softmax", "[2,4] large logits", arg([2, 4], [100, 101, 99, 100.5, -300, -301, -299.5, -300]), {
      axis: 1,
    }),
  ],
};
