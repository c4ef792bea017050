/**
 * Fused gradients (src/tensor/grad-fusions.ts): the group norm + affine backward computed in one
 * go must equal the node-by-node rules, for every subset of wanted inputs, and must step aside
 * where an inner value has another reader or is itself asked for.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { evaluate, trace } from "../../src/runtime/compile.ts";
import { grad } from "../../src/tensor/autodiff.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import * as o from "../../src/tensor/ops.ts";
import type { Tensor } from "../../src/tensor/symbolic.ts";
import { assertAllclose } from "../support/allclose.ts";
import { TestRng } from "../support/check.ts";

function random(shape: readonly number[], seed: string, offset = 0): HostTensor<"float32"> {
  const rng = TestRng.fromName(seed);
  const n = shape.reduce((p, d) => p * d, 1);
  return new HostTensor(
    Float32Array.from({ length: n }, () => offset + rng.normal()),
    shape,
  );
}

/** groupNorm's trace, with the standardized value s at hand. */
function groupNormAffine(x: Tensor, w: Tensor, b: Tensor, groups: number) {
  const [n, c] = x.shape as [number, number];
  const bshape = [1, c, ...x.shape.slice(2).map(() => 1)];
  const s = o.standardize(o.reshape(x, [n, groups, -1]), 2, 1e-5);
  const y = o.reshape(s, x.shape);
  return { s, y, out: o.add(o.mul(y, o.reshape(w, bshape)), o.reshape(b, bshape)) };
}

function inputs(shape: readonly number[]) {
  const c = shape[1]!;
  return {
    x: random(shape, `x${shape}`, 0.5),
    w: random([c], `w${shape}`, 1),
    b: random([c], `b${shape}`),
    r: random(shape, `r${shape}`),
  };
}

/** ∂/∂(x, w, b) of Σ out ⊙ r; `unfused` adds 0·Σ s, a second reader of s that blocks the fusion. */
async function grads(shape: readonly number[], groups: number, unfused: boolean, which = ["x", "w", "b"]) {
  return evaluate(
    inputs(shape),
    (t) => {
      const { s, out } = groupNormAffine(t["x"]!, t["w"]!, t["b"]!, groups);
      let loss = o.sum(o.mul(out, t["r"]!));
      if (unfused) loss = o.add(loss, o.mul(o.sum(s), 0));
      const gs = grad(
        loss,
        which.map((k) => t[k]!),
      );
      return Object.fromEntries(which.map((k, i) => [`d${k}`, gs[i]!]));
    },
    { threads: 1 },
  );
}

/** Backward nodes whose output is as large as x: the passes over the full activations. */
const fullPasses = (shape: readonly number[], groups: number, unfused: boolean): string[] => {
  const prims: string[] = [];
  const size = shape.reduce((p, d) => p * d, 1);
  trace({ x: { shape }, w: { shape: [shape[1]!] }, b: { shape: [shape[1]!] } }, (t, g) => {
    const { s, out } = groupNormAffine(t.x, t.w, t.b, groups);
    let loss = o.sum(o.square(out));
    if (unfused) loss = o.add(loss, o.mul(o.sum(s), 0));
    const before = g.nodes.length;
    const gs = grad(loss, [t.x, t.w, t.b]);
    for (const n of g.nodes.slice(before))
      if (n.output.size === size && n.prim !== "reshape") prims.push(n.prim);
    return { dx: gs[0]! };
  });
  return prims;
};

describe("fused gradients: group norm + affine", () => {
  for (const [shape, groups] of [
    [[2, 6, 3, 4], 3],
    [[3, 8, 5], 2],
    [[3, 4], 2],
  ] as const) {
    test(`[${shape}] in ${groups} groups: equals the node-by-node rules`, async () => {
      const fused = await grads(shape, groups, false);
      const plain = await grads(shape, groups, true);
      for (const k of ["x", "w", "b"])
        assertAllclose(fused[`d${k}`]!, plain[`d${k}`]!, { rtol: 1e-4, atol: 1e-5, what: `d${k}` });
    });
  }

  test("each wanted subset gives the same gradients", async () => {
    const shape = [2, 6, 3, 4];
    const all = await grads(shape, 3, false);
    for (const which of [["x"], ["w"], ["b"], ["w", "b"], ["x", "b"]]) {
      const some = await grads(shape, 3, false, which);
      for (const k of which)
        assertAllclose(some[`d${k}`]!, all[`d${k}`]!, { rtol: 1e-6, atol: 1e-7, what: `d${k} of ${which}` });
    }
  });

  test("the fused backward makes fewer passes over the activations", () => {
    const fused = fullPasses([2, 6, 3, 4], 3, false);
    const plain = fullPasses([2, 6, 3, 4], 3, true);
    assert.ok(fused.length < plain.length, `fused: ${fused.join(" ")}; node by node: ${plain.join(" ")}`);
  });

  test("a value asked for inside the pattern keeps the node-by-node rules", async () => {
    const shape = [2, 4, 3, 3];
    const v = inputs(shape);
    const out = await evaluate(
      v,
      (t) => {
        const { y, out } = groupNormAffine(t["x"]!, t["w"]!, t["b"]!, 2);
        const [dy, dx] = grad(o.sum(o.mul(out, t["r"]!)), [y, t["x"]!]);
        return { dy: dy!, dx: dx! };
      },
      { threads: 1 },
    );
    // ∂L/∂y = r ⊙ w (per channel)
    const want = new Float32Array(v.r.data.length);
    const hw = 9;
    for (let i = 0; i < want.length; i++) want[i] = v.r.data[i]! * v.w.data[Math.floor(i / hw) % 4]!;
    assertAllclose(out["dy"]!, new HostTensor(want, shape), { rtol: 1e-6, atol: 1e-7, what: "dy" });
    const ref = await grads(shape, 2, true, ["x"]);
    assertAllclose(out["dx"]!, ref["dx"]!, { rtol: 1e-4, atol: 1e-5, what: "dx" });
  });
});
