import assert from "node:assert/strict";
import { test } from "node:test";
import { evaluate } from "../../src/runtime/compile.ts";
import { grad } from "../../src/tensor/autodiff.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import * as o from "../../src/tensor/ops.ts";

test("trace, differentiate and run a small graph", async () => {
  const x = new HostTensor(Float32Array.from([1, 2, 3, 4, 5, 6]), [2, 3]);
  const w = new HostTensor(Float32Array.from([1, 0, -1, 2, 0.5, 1]), [3, 2]);
  const r = await evaluate({ x, w }, ({ x, w }) => {
    const y = o.matmul(x!, w!); // [2,2]
    const loss = o.sum(o.square(y));
    const [gw, gx] = grad(loss, [w!, x!]);
    return { y, loss, gw: gw!, gx: gx! };
  });
  // y = x @ w
  const y = [1 * 1 + 2 * -1 + 3 * 0.5, 1 * 0 + 2 * 2 + 3 * 1, 4 - 5 + 3, 0 + 10 + 6];
  assert.deepEqual(Array.from(r["y"]!.data as Float32Array), y);
  assert.equal(
    (r["loss"]!.data as Float32Array)[0],
    y.reduce((s, v) => s + v * v, 0),
  );
  // dL/dw = xᵀ (2y)
  const gw = [
    2 * (1 * y[0]! + 4 * y[2]!),
    2 * (1 * y[1]! + 4 * y[3]!),
    2 * (2 * y[0]! + 5 * y[2]!),
    2 * (2 * y[1]! + 5 * y[3]!),
    2 * (3 * y[0]! + 6 * y[2]!),
    2 * (3 * y[1]! + 6 * y[3]!),
  ];
  assert.deepEqual(Array.from(r["gw"]!.data as Float32Array), gw);
});
