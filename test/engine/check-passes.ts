/**
 * `checkRoundTrip` (test/support/check.ts) with the emission passes set: the case's graph compiled
 * with `passes`, run in ONNX Runtime, against the float64 reference.
 */
import type { EmitPasses } from "../../src/onnx/passes/options.ts";
import { compileGraph, trace } from "../../src/runtime/compile.ts";
import { assertAllclose } from "../support/allclose.ts";
import { makeInputs, type OpCase } from "../support/check.ts";
import { evalGraph, fromHost, type RefTensor } from "../support/ref.ts";

export async function checkRoundTripWith(c: OpCase, passes: Partial<EmitPasses>): Promise<void> {
  const specs = Object.fromEntries(
    Object.entries(c.args).map(([k, a]) => [k, { shape: a.shape, dtype: a.dtype ?? "float32" }]),
  );
  const { graph, outputs } = trace(specs, (t, g) => ({ y: c.build(t, g) }));
  const feeds = makeInputs(c, graph);
  const compiled = await compileGraph(graph, outputs, { threads: 1, passes });
  const got = (await compiled.run(feeds))["y"]!;
  const ref = Object.fromEntries(Object.entries(feeds).map(([k, v]) => [k, fromHost(v)]));
  const [want] = evalGraph(graph, ref, [outputs["y"]!]) as [RefTensor];
  assertAllclose(got, want, { what: `${c.name} (forward)`, rtol: c.rtol ?? 1e-5, atol: c.atol ?? 1e-5 });
}
