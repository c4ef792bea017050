/**
 * `grad` beyond single primitives: accumulation over fan-out, gradients with respect to
 * intermediates, seeds, integer paths, the tie conventions of max / maximum / minimum, and second
 * derivatives (the gradient graph of a first `grad` is differentiated again and checked against
 * finite differences of the reference evaluating that first gradient graph).
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { evaluate } from "../../src/runtime/compile.ts";
import { grad } from "../../src/tensor/autodiff.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import * as o from "../../src/tensor/ops.ts";
import { Graph, type Tensor } from "../../src/tensor/symbolic.ts";
import { assertAllclose } from "../support/allclose.ts";
import { checkGrad, type OpCase, TestRng } from "../support/check.ts";

const f32 = (values: readonly number[], shape: readonly number[] = [values.length]) =>
  new HostTensor(Float32Array.from(values), shape);

const run = (
  inputs: Record<string, HostTensor>,
  fn: (t: Record<string, Tensor>, g: Graph) => Record<string, Tensor>,
) => evaluate(inputs, fn, { threads: 1 });

/** A fixed random constant (the weights of a first-order loss). */
function constant(g: Graph, shape: readonly number[], seed: string): Tensor {
  const rng = TestRng.fromName(seed);
  const n = shape.reduce((p, d) => p * d, 1);
  return g.constant(
    new HostTensor(
      Float32Array.from({ length: n }, () => rng.normal()),
      shape,
    ),
  );
}

/** The case differentiates ∇ₓ Σ f(x) ⊙ R1 once more (so its check is a second-order one). */
function secondOrder(
  name: string,
  args: OpCase["args"],
  f: (t: Readonly<Record<string, Tensor>>) => Tensor,
  by: string,
): OpCase {
  return {
    name: `second order: ${name}`,
    args,
    build: (t, g) => {
      const y = f(t);
      const [gx] = grad(o.sum(o.mul(y, constant(g, y.shape, name))), [t[by]!]);
      return gx!;
    },
  };
}

const SECOND_ORDER: OpCase[] = [
  secondOrder("tanh", { x: { shape: [2, 3] } }, (t) => o.tanh(t["x"]!), "x"),
  secondOrder("sigmoid · x (SiLU)", { x: { shape: [5] } }, (t) => o.mul(t["x"]!, o.sigmoid(t["x"]!)), "x"),
  secondOrder("erf", { x: { shape: [5] } }, (t) => o.erf(t["x"]!), "x"),
  secondOrder(
    "log, sqrt",
    { x: { shape: [4], init: "positive" } },
    (t) => o.add(o.log(t["x"]!), o.sqrt(t["x"]!)),
    "x",
  ),
  secondOrder(
    "div",
    { a: { shape: [2, 3] }, b: { shape: [3], init: "positive" } },
    (t) => o.div(t["a"]!, t["b"]!),
    "b",
  ),
  secondOrder(
    "sin, cos, exp",
    { x: { shape: [4] } },
    (t) => o.mul(o.sin(t["x"]!), o.exp(o.cos(t["x"]!))),
    "x",
  ),
  secondOrder("softmax", { x: { shape: [2, 4] } }, (t) => o.softmax(t["x"]!, 1), "x"),
  secondOrder(
    "max (distinct)",
    { x: { shape: [3, 4], init: "distinct" } },
    (t) => o.square(o.max(t["x"]!, 1)),
    "x",
  ),
  secondOrder(
    "matmul, by a",
    { a: { shape: [2, 3] }, b: { shape: [3, 2] } },
    (t) => o.square(o.matmul(t["a"]!, t["b"]!)),
    "a",
  ),
  secondOrder(
    "conv stride 2 groups 2, by x",
    { x: { shape: [1, 4, 5, 5] }, w: { shape: [4, 2, 3, 3] } },
    (t) => o.tanh(o.conv2d(t["x"]!, t["w"]!, undefined, { stride: 2, padding: 1, groups: 2 })),
    "x",
  ),
  secondOrder(
    "conv dilation 2, by w",
    { x: { shape: [2, 2, 6, 6] }, w: { shape: [3, 2, 3, 3] } },
    (t) => o.square(o.conv2d(t["x"]!, t["w"]!, undefined, { dilation: 2, padding: [1, 2, 0, 1] })),
    "w",
  ),
  secondOrder(
    "gather, slice with steps, pad",
    { x: { shape: [5, 6] }, i: { shape: [3], dtype: "int64", init: [4, 0, 4] } },
    (t) => o.square(o.pad(o.slice(o.gather(t["x"]!, t["i"]!), 1, 1, 6, 2), [1, 0, 0, 2])),
    "x",
  ),
];

describe("second derivatives", () => {
  for (const c of SECOND_ORDER) test(c.name, () => checkGrad(c));
});

describe("composite gradients", () => {
  const cases: OpCase[] = [
    {
      name: "fan-out: x used by several ops and twice by one",
      args: { x: { shape: [2, 3] } },
      build: (t) => {
        const x = t["x"]!;
        return o.concat([o.add(o.mul(x, x), o.mul(o.sin(x), x)), x], 0);
      },
    },
    {
      name: "gather along axis 1, mean, unbroadcast",
      args: {
        x: { shape: [2, 4, 3] },
        i: { shape: [2, 2], dtype: "int64", init: [3, 0, 3, 1] },
        b: { shape: [3] },
      },
      build: (t) => o.add(o.mean(o.gather(t["x"]!, t["i"]!, 1), [1], true), t["b"]!),
    },
    {
      // silu's rule recomputes an affine input in the backward pass (grad-rules.ts `recomputed`)
      name: "silu of a per-channel affine (group norm's scale and shift, a ResNet's time scale)",
      args: { x: { shape: [2, 3, 4, 4] }, w: { shape: [1, 3, 1, 1] }, b: { shape: [1, 3, 1, 1] } },
      build: (t) => o.mul(o.silu(o.add(o.mul(t["x"]!, t["w"]!), t["b"]!)), o.sin(t["x"]!)),
    },
    {
      name: "silu of an affine whose small operands come first",
      args: { x: { shape: [2, 8, 6] }, w: { shape: [8, 1] }, b: { shape: [2, 1, 1] } },
      build: (t) => o.silu(o.add(t["b"]!, o.mul(t["w"]!, t["x"]!))),
    },
    {
      // a conv's weight gradient recomputes a silu-of-affine input (grad-rules.ts `recomputedConvInput`),
      // and silu's own rule reuses the recomputed affine
      name: "conv of silu of a per-channel affine (a ResNet's group norm + SiLU + conv)",
      args: {
        x: { shape: [2, 3, 5, 5] },
        a: { shape: [1, 3, 1, 1] },
        b: { shape: [1, 3, 1, 1] },
        w: { shape: [2, 3, 3, 3] },
      },
      build: (t) =>
        o.conv2d(o.silu(o.add(o.mul(t["x"]!, t["a"]!), t["b"]!)), t["w"]!, undefined, { padding: 1 }),
    },
    {
      name: "conv of a nearest upsampling (an upsampler), the upsampled tensor used twice",
      args: { x: { shape: [1, 2, 3, 3] }, w: { shape: [2, 2, 3, 3] } },
      build: (t) => {
        const up = o.upsampleNearest(t["x"]!, 2);
        return o.add(o.conv2d(up, t["w"]!, undefined, { padding: 1 }), o.sin(up));
      },
    },
    {
      name: "split and rsqrt",
      args: { x: { shape: [6, 2], init: "positive" } },
      build: (t) => {
        const [a, b] = o.split(t["x"]!, 0, [2, 4]) as [Tensor, Tensor];
        return o.matmul(o.transpose(o.rsqrt(a), [1, 0]), o.slice(b, 0, 1, 3));
      },
    },
  ];
  for (const c of cases) test(c.name, () => checkGrad(c));
});

describe("grad semantics", () => {
  test("an input the output does not use gets zeros of its shape", async () => {
    const r = await run({ x: f32([1, 2]), u: f32([1, 2, 3, 4, 5, 6], [2, 3]) }, ({ x, u }) => {
      const [gx, gu] = grad(o.sum(o.square(x!)), [x!, u!]);
      return { gx: gx!, gu: gu! };
    });
    assertAllclose(r["gx"]!, f32([2, 4]), { atol: 0 });
    assertAllclose(r["gu"]!, new HostTensor(new Float32Array(6), [2, 3]), { atol: 0 });
  });

  test("gradient with respect to an intermediate tensor", async () => {
    const r = await run({ x: f32([0.5, -1]) }, ({ x }) => {
      const h = o.mul(x!, 2);
      const [gh] = grad(o.sum(o.exp(h)), [h]);
      return { gh: gh! };
    });
    assertAllclose(r["gh"]!, f32([Math.exp(1), Math.exp(-2)]));
  });

  test("a non-scalar output needs a seed; with one, grad is the vector–Jacobian product", async () => {
    await assert.rejects(
      run({ x: f32([1, 2]) }, ({ x }) => ({ g: grad(o.mul(x!, 3), [x!])[0]! })),
      /not a scalar/,
    );
    const r = await run({ x: f32([1, 2]), dy: f32([0.5, -2]) }, ({ x, dy }) => ({
      g: grad(o.mul(o.square(x!), 3), [x!], dy)[0]!,
    }));
    assertAllclose(r["g"]!, f32([6 * 1 * 0.5, 6 * 2 * -2])); // 6x·dy
  });

  test("integer paths carry no gradient", async () => {
    const r = await run({ x: f32([1.5, -2.7, 0.2]) }, ({ x }) => {
      const whole = o.cast(o.cast(x!, "int64"), "float32"); // trunc(x), piecewise constant
      return { g: grad(o.sum(o.mul(whole, x!)), [x!])[0]! };
    });
    assertAllclose(r["g"]!, f32([1, -2, 0]), { atol: 0 });
  });

  test("max shares the gradient equally between tied maxima", async () => {
    const r = await run({ x: f32([1, 3, 3, 2, 5, 5, 5, 0], [2, 4]) }, ({ x }) => {
      const m = o.max(x!, 1); // [3, 5]
      return { g: grad(o.sum(o.mul(m, x!.graph.constant(f32([2, 3])))), [x!])[0]! };
    });
    assertAllclose(r["g"]!, f32([0, 1, 1, 0, 1, 1, 1, 0], [2, 4]));
  });

  test("maximum and minimum send a tie's gradient to the first operand", async () => {
    const r = await run({ a: f32([1, 2, 4]), b: f32([1, 3, 0]) }, ({ a, b }) => {
      const [ga, gb] = grad(o.sum(o.maximum(a!, b!)), [a!, b!]);
      const [ha, hb] = grad(o.sum(o.minimum(a!, b!)), [a!, b!]);
      return { ga: ga!, gb: gb!, ha: ha!, hb: hb! };
    });
    assertAllclose(r["ga"]!, f32([1, 0, 1]), { atol: 0 });
    assertAllclose(r["gb"]!, f32([0, 1, 0]), { atol: 0 });
    assertAllclose(r["ha"]!, f32([1, 1, 0]), { atol: 0 });
    assertAllclose(r["hb"]!, f32([0, 0, 1]), { atol: 0 });
  });
});

describe("composite ops against their definitions", () => {
  test("gather along a middle axis: out[a, i, j, c] = x[a, idx[i, j], c]", async () => {
    const xs = Array.from({ length: 2 * 4 * 3 }, (_, k) => k);
    const idx = [3, 0, 3, 1];
    const r = await run({ x: f32(xs, [2, 4, 3]), i: HostTensor.int64(idx, [2, 2]) }, ({ x, i }) => ({
      y: o.gather(x!, i!, 1),
    }));
    const want: number[] = [];
    for (let a = 0; a < 2; a++)
      for (const row of idx) for (let c = 0; c < 3; c++) want.push(xs[(a * 4 + row) * 3 + c]!);
    assertAllclose(r["y"]!, f32(want, [2, 2, 2, 3]), { atol: 0 });
  });

  test("gather along the last axis", async () => {
    const r = await run(
      { x: f32([1, 2, 3, 4, 5, 6], [2, 3]), i: HostTensor.int64([2, 2, 0]) },
      ({ x, i }) => ({
        y: o.gather(x!, i!, -1),
      }),
    );
    assertAllclose(r["y"]!, f32([3, 3, 1, 6, 6, 4], [2, 3]), { atol: 0 });
  });

  test("mean, split, unbroadcast, rsqrt", async () => {
    const r = await run({ x: f32([1, 2, 3, 4, 5, 6], [2, 3]) }, ({ x }) => {
      const [a, b] = o.split(x!, 1, [1, 2]) as [Tensor, Tensor];
      return {
        mean1: o.mean(x!, 1),
        meanAll: o.mean(x!),
        a: a,
        b: b,
        unb: o.unbroadcast(x!, [1, 3]),
        unbLead: o.unbroadcast(x!, [3]),
        rs: o.rsqrt(o.mul(x!, x!)),
      };
    });
    assertAllclose(r["mean1"]!, f32([2, 5]));
    assertAllclose(r["meanAll"]!, f32([3.5], []));
    assertAllclose(r["a"]!, f32([1, 4], [2, 1]), { atol: 0 });
    assertAllclose(r["b"]!, f32([2, 3, 5, 6], [2, 2]), { atol: 0 });
    assertAllclose(r["unb"]!, f32([5, 7, 9], [1, 3]), { atol: 0 });
    assertAllclose(r["unbLead"]!, f32([5, 7, 9]), { atol: 0 });
    assertAllclose(r["rs"]!, f32([1, 1 / 2, 1 / 3, 1 / 4, 1 / 5, 1 / 6], [2, 3]));
  });
});

describe("arithmetic simplification", () => {
  test("the gradient of Σ y ⊙ r with respect to y is r itself: no broadcast seed, no multiply by one", () => {
    const g = new Graph();
    const y = g.input("y", [2, 3]);
    const r = g.input("r", [2, 3]);
    const [gy] = grad(o.sum(o.mul(y, r)), [y]);
    assert.equal(gy, r);
  });

  test("x·1, 1·x, x + 0, x − 0 and x / 1 are x; broadcasts the op itself would make are dropped", () => {
    const g = new Graph();
    const x = g.input("x", [2, 3]);
    for (const t of [o.mul(x, 1), o.mul(1, x), o.add(x, 0), o.add(0, x), o.sub(x, 0), o.div(x, 1)])
      assert.equal(t, x);
    // 0 − x and 1 / x are not x
    assert.notEqual(o.sub(0, x), x);
    assert.notEqual(o.div(1, x), x);
    // a broadcast one that widens the result is kept: [3] · ones[2, 3] has the shape [2, 3]
    const v = g.input("v", [3]);
    assert.deepEqual(o.mul(v, o.expand(g.scalar(1), [2, 3])).shape, [2, 3]);
    // an expanded operand is read unexpanded when the other operand already has the result's shape
    const s = g.input("s", [1, 3]);
    const p = o.mul(o.expand(s, [2, 3]), x);
    assert.deepEqual(g.producer(p)!.inputs, [s, x]);
    // shape errors are still reported, expanded operand or not
    assert.throws(
      () => o.mul(o.expand(s, [2, 3]), g.input("z", [4])),
      /mul: cannot broadcast shapes \[2, 3\] and \[4\]/,
    );
    assert.throws(() => o.add(x, g.input("w", [3, 2])), /add: cannot broadcast/);
  });

  test("the simplified graphs compute the same values", async () => {
    const r = await run({ x: f32([1, -2, 3, 0.5, 5, -6], [2, 3]), s: f32([2, 3, 4], [1, 3]) }, ({ x, s }) => {
      const [gx] = grad(o.sum(o.mul(o.mul(x!, 1), o.expand(s!, [2, 3]))), [x!]);
      return { gx: gx!, y: o.add(o.div(o.mul(o.expand(s!, [2, 3]), x!), 1), 0) };
    });
    assertAllclose(r["gx"]!, f32([2, 3, 4, 2, 3, 4], [2, 3]), { atol: 0 });
    assertAllclose(r["y"]!, f32([2, -6, 12, 1, 15, -24], [2, 3]), { atol: 0 });
  });
});
