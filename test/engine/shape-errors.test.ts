/**
 * Tracing with inconsistent shapes or dtypes throws a ShapeError at the call that is wrong, and the
 * message names the op and the shapes involved (so the fix can be read off the message).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { DType } from "../../src/tensor/host.ts";
import * as o from "../../src/tensor/ops.ts";
import { ShapeError } from "../../src/tensor/primitives.ts";
import { Graph, type Tensor } from "../../src/tensor/symbolic.ts";

function input(shape: readonly number[], dtype: DType = "float32"): Tensor {
  return graph.input(`x${graph.inputs.length}`, shape, dtype);
}
let graph = new Graph();

/** Asserts that `f` throws a ShapeError whose message starts with `op:` and contains every part. */
function throwsShapeError(f: () => unknown, op: string, ...parts: string[]): void {
  graph = new Graph();
  assert.throws(f, (e: unknown) => {
    assert.ok(e instanceof ShapeError, `expected a ShapeError, got ${String(e)}`);
    assert.ok(e.message.startsWith(`${op}:`), `message should start with "${op}:": ${e.message}`);
    for (const p of parts) assert.ok(e.message.includes(p), `message should mention ${p}: ${e.message}`);
    return true;
  });
}

test("broadcasting binary ops name both shapes", () => {
  throwsShapeError(() => o.add(input([2, 3]), input([4])), "add", "[2, 3]", "[4]");
  throwsShapeError(() => o.mul(input([3, 1, 4]), input([2, 3])), "mul", "[3, 1, 4]", "[2, 3]");
  throwsShapeError(() => o.less(input([5]), input([2, 1, 3])), "less", "[5]", "[2, 1, 3]");
  throwsShapeError(() => o.where(input([2], "bool"), input([3]), input([3])), "where", "[2]", "[3]");
});

test("dtype mismatches are named", () => {
  throwsShapeError(() => o.add(input([2]), input([2], "int64")), "add", "float32", "int64");
  throwsShapeError(() => o.where(input([2]), input([2]), input([2])), "where", "condition", "float32");
  throwsShapeError(
    () => o.where(input([2], "bool"), input([2], "bool"), input([2], "bool")),
    "where",
    "bool",
  );
  throwsShapeError(() => o.exp(input([2], "int64")), "exp", "int64");
  throwsShapeError(() => o.gather(input([4, 2]), input([2])), "gather", "int64", "float32");
  throwsShapeError(() => o.sum(input([3], "bool")), "sum", "bool");
});

test("matmul names both operands", () => {
  throwsShapeError(() => o.matmul(input([2, 3]), input([4, 5])), "matmul", "[2, 3]", "[4, 5]");
  throwsShapeError(() => o.matmul(input([3]), input([3, 2])), "matmul", "[3]", "[3, 2]");
  throwsShapeError(() => o.matmul(input([2, 3, 4]), input([5, 4, 2])), "matmul", "[2, 3, 4]", "[5, 4, 2]");
});

test("convolutions name the input, the weight and the gradient shapes", () => {
  throwsShapeError(
    () => o.conv2d(input([1, 3, 5, 5]), input([4, 2, 3, 3])),
    "conv",
    "[1, 3, 5, 5]",
    "[4, 2, 3, 3]",
  );
  throwsShapeError(() => o.conv2d(input([1, 1, 2, 2]), input([1, 1, 3, 3])), "conv", "[1, 1, 2, 2]", "3x3");
  throwsShapeError(
    () => o.conv2d(input([1, 2, 5, 5]), input([3, 2, 3, 3]), input([4])),
    "conv",
    "[4]",
    "[3]",
  );
  throwsShapeError(
    () => o.conv2d(input([1, 4, 5, 5]), input([3, 2, 3, 3]), undefined, { groups: 2 }),
    "conv",
    "4",
    "3",
  );
  throwsShapeError(() => o.conv2d(input([3, 5, 5]), input([3, 3, 3, 3])), "conv", "[3, 5, 5]");
  const a = o.convAttrs({ stride: 2 });
  throwsShapeError(
    () => o.convTranspose(input([1, 2, 4, 4]), input([2, 3, 3, 3]), a, [1, 3, 6, 6]),
    "convTranspose",
    "[1, 2, 4, 4]",
    "[1, 2, 2, 2]",
  );
  throwsShapeError(
    () => o.convWeightGrad(input([1, 3, 6, 6]), input([1, 2, 3, 3]), a, [2, 3, 3, 3]),
    "convWeightGrad",
    "[1, 2, 3, 3]",
    "[1, 2, 2, 2]",
  );
});

test("movement ops name the shapes involved", () => {
  throwsShapeError(() => o.reshape(input([2, 3]), [4]), "reshape", "[2, 3]", "[4]");
  throwsShapeError(() => o.reshape(input([2, 3]), [-1, 4]), "reshape", "[2, 3]", "[-1, 4]");
  throwsShapeError(() => o.reshape(input([2, 3]), [-1, -1]), "reshape", "[-1, -1]");
  throwsShapeError(() => o.transpose(input([2, 3, 4]), [0, 2]), "transpose", "[0, 2]", "[2, 3, 4]");
  throwsShapeError(() => o.transpose(input([2, 3]), [0, 0]), "transpose", "[0, 0]", "[2, 3]");
  throwsShapeError(() => o.expand(input([3]), [2, 4]), "expand", "[3]", "[2, 4]");
  throwsShapeError(() => o.expand(input([2, 3]), [3]), "expand", "[2, 3]", "[3]");
  throwsShapeError(() => o.slice(input([4, 5]), 1, 2, 7), "slice", "2:7", "[4, 5]");
  throwsShapeError(() => o.slice(input([4, 5]), 3, 0, 1), "slice", "3", "2");
  throwsShapeError(() => o.pad(input([2, 3]), [1, 1]), "pad", "[1, 1]", "[2, 3]");
  throwsShapeError(() => o.concat([input([2, 3]), input([3, 3])], 1), "concat", "[2, 3]", "[3, 3]");
  throwsShapeError(() => o.concat([input([2, 3]), input([2, 3, 1])], 0), "concat", "[2, 3]", "[2, 3, 1]");
  throwsShapeError(() => o.split(input([5, 2]), 0, 2), "split", "[5, 2]");
  throwsShapeError(
    () => o.scatterAdd(input([3], "int64"), input([2, 4]), [5, 4]),
    "scatterAdd",
    "[2, 4]",
    "[3, 4]",
  );
  throwsShapeError(() => o.gather(input([]), input([2], "int64")), "gather", "rank 0");
});

test("reductions and softmax check their axes", () => {
  throwsShapeError(() => o.sum(input([2, 3]), 2), "sum", "2", "2");
  throwsShapeError(() => o.mean(input([2, 3]), -3), "mean", "-3", "2");
  throwsShapeError(
    () => graph.apply("sum", [input([2, 3])], { axes: [1, -1], keepDims: false }),
    "sum",
    "[1, -1]",
  );
  throwsShapeError(() => o.softmax(input([2, 3]), 3), "softmax", "3", "2");
});

test("a reduction primitive over no axes is refused (ONNX would reduce over all of them)", () => {
  throwsShapeError(() => graph.apply("sum", [input([2, 3])], { axes: [], keepDims: false }), "sum", "[2, 3]");
  throwsShapeError(() => graph.apply("max", [input([2, 3])], { axes: [], keepDims: true }), "max", "[2, 3]");
});
