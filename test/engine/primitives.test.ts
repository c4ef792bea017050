/**
 * Every primitive, two ways (STYLE.md principle 11):
 *
 * - ONNX round trip: a one-primitive graph lowered to ONNX and run in ONNX Runtime agrees with the
 *   float64 reference (`test/support/ref.ts`), over broadcasting shapes, scalars and the integer and
 *   bool dtypes where the primitive takes them;
 * - gradient: `grad()` of Σ op(inputs) ⊙ R, run in ONNX Runtime, agrees with central differences of
 *   the reference.
 *
 * The primitives are enumerated from the lowering table, so a new primitive without cases fails here.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { lowerings } from "../../src/onnx/lowering.ts";
import type { PrimName } from "../../src/tensor/primitives.ts";
import { checkGrad, checkRoundTrip, describeCase, type OpCase } from "../support/check.ts";
import { convCases } from "./cases-conv.ts";
import { elementwiseCases } from "./cases-elementwise.ts";
import { movementCases } from "./cases-movement.ts";
import { normCases } from "./cases-norm.ts";

const cases: { [K in PrimName]: readonly OpCase[] } = {
  ...elementwiseCases,
  ...movementCases,
  ...convCases,
  ...normCases,
};

/** Primitives whose outputs carry no gradient (bool results). */
const NO_GRADIENT = new Set<PrimName>(["less", "greater", "equal"]);

const prims = Object.keys(lowerings) as PrimName[];

test("every primitive in the lowering table has round-trip and gradient cases that use it", () => {
  for (const prim of prims) {
    const list = cases[prim] ?? [];
    assert.ok(list.length > 0, `primitive "${prim}" has no test cases`);
    let graded = 0;
    for (const c of list) {
      const d = describeCase(c);
      assert.ok(d.prims.has(prim), `case "${c.name}" is listed under ${prim} but its graph does not use it`);
      if (d.wrt.length > 0) graded++;
    }
    if (!NO_GRADIENT.has(prim)) assert.ok(graded > 0, `primitive "${prim}" has no gradient case`);
  }
});

for (const prim of prims) {
  describe(prim, () => {
    for (const c of cases[prim] ?? []) {
      test(`${c.name}: ONNX round trip`, () => checkRoundTrip(c));
      if (describeCase(c).wrt.length > 0) test(`${c.name}: gradient`, () => checkGrad(c));
    }
  });
}
