/**
 * The two checks every primitive (and every layer) goes through:
 *
 * - `checkRoundTrip`: trace the case, lower it to ONNX, run it in ONNX Runtime and compare with the
 *   float64 reference interpreter (`ref.ts`) on the same graph.
 * - `checkGrad`: trace loss = Σ f(inputs) ⊙ R with a fixed random R, take the analytic gradients with
 *   `grad()` and run them in ONNX Runtime (float32); compare with central differences
 *   (L(x + h·eᵢ) − L(x − h·eᵢ)) / 2h of the float64 reference over the forward graph only. The
 *   reference never sees a gradient rule, so a wrong rule or a wrong lowering of a backward
 *   primitive cannot agree with it by construction.
 */
import { compileGraph, trace } from "../../src/runtime/compile.ts";
import { grad } from "../../src/tensor/autodiff.ts";
import { type DType, HostTensor, sizeOf } from "../../src/tensor/host.ts";
import * as o from "../../src/tensor/ops.ts";
import type { PrimName } from "../../src/tensor/primitives.ts";
import type { Graph, Tensor } from "../../src/tensor/symbolic.ts";
import { assertAllclose } from "./allclose.ts";
import { evalGraph, fromHost, type RefTensor, refEvaluator } from "./ref.ts";

/** How an input is filled. Values are rounded to float32 (or to integers) before both sides see them. */
export type Init =
  | "normal"
  | "uniform"
  /** in [0.5, 2]: for log, sqrt, divisors */
  | "positive"
  /** ±[0.3, 1.5]: for abs */
  | "awayFromZero"
  /** all "distinct" inputs of a case together hold distinct values ≥ 0.02 apart: for max, minimum, maximum */
  | "distinct"
  | "bool"
  /** integers in [lo, hi] */
  | { int: readonly [number, number] }
  | readonly number[];

export interface ArgSpec {
  shape: readonly number[];
  dtype?: DType;
  init?: Init;
}

export interface OpCase {
  name: string;
  args: Readonly<Record<string, ArgSpec>>;
  build: (t: Readonly<Record<string, Tensor>>, g: Graph) => Tensor;
  /** Inputs to differentiate by; default every float32 input; [] skips the gradient check. */
  wrt?: readonly string[];
  /** Forward tolerances (float outputs; integer and bool outputs must match exactly). */
  rtol?: number;
  atol?: number;
  /** How inputs that `build` declares itself (layer parameters) are filled; default "normal". */
  paramInit?: Init;
  /** Gradient tolerances: |analytic − fd| ≤ gradAtol·max|fd| + gradRtol·|fd| (max over all inputs). */
  gradRtol?: number;
  gradAtol?: number;
}

/** A small seeded generator (mulberry32) so cases are reproducible and independent of src/. */
export class TestRng {
  private s: number;
  private spare: number | null = null;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  static fromName(name: string): TestRng {
    let h = 0x811c9dc5;
    for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
    return new TestRng(h);
  }
  uniform(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  normal(): number {
    if (this.spare !== null) {
      const v = this.spare;
      this.spare = null;
      return v;
    }
    const u = 1 - this.uniform();
    const v = this.uniform();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.uniform() * (hi - lo + 1));
  }
  shuffle<T>(xs: T[]): T[] {
    for (let i = xs.length - 1; i > 0; i--) {
      const j = Math.floor(this.uniform() * (i + 1));
      [xs[i], xs[j]] = [xs[j]!, xs[i]!];
    }
    return xs;
  }
}

function hostOf(values: readonly number[], shape: readonly number[], dtype: DType): HostTensor {
  switch (dtype) {
    case "float32":
      return new HostTensor(Float32Array.from(values), shape);
    case "int64":
      return HostTensor.int64(values, shape);
    case "int32":
      return new HostTensor(Int32Array.from(values), shape);
    case "bool":
      return new HostTensor(
        Uint8Array.from(values, (v) => (v ? 1 : 0)),
        shape,
      );
  }
}

/** The spec of every graph input: the case's `args`, and the parameters its `build` declared. */
function inputSpecs(c: OpCase, graph: Graph): [string, ArgSpec][] {
  return graph.inputs.map((t) => {
    const name = t.inputName!;
    return [name, c.args[name] ?? { shape: t.shape, dtype: t.dtype, init: c.paramInit ?? "normal" }];
  });
}

/** Values for every input of the traced case, reproducible from the case's name. */
export function makeInputs(c: OpCase, graph: Graph): Record<string, HostTensor> {
  const rng = TestRng.fromName(c.name);
  const specs = inputSpecs(c, graph);
  const nDistinct = specs
    .filter(([, a]) => a.init === "distinct")
    .reduce((s, [, a]) => s + sizeOf(a.shape), 0);
  // a shuffled grid over [−2, 2): distinct values, far apart compared with the FD step
  const pool = rng.shuffle(
    Array.from({ length: nDistinct }, (_, i) => ((i - nDistinct / 2) * 4) / nDistinct),
  );
  const out: Record<string, HostTensor> = {};
  for (const [name, a] of specs) {
    const dtype = a.dtype ?? "float32";
    const n = sizeOf(a.shape);
    const init = a.init ?? (dtype === "bool" ? "bool" : dtype === "float32" ? "normal" : { int: [-5, 5] });
    let values: number[];
    if (typeof init === "object" && "int" in init) {
      const [lo, hi] = init.int;
      values = Array.from({ length: n }, () => rng.int(lo, hi));
    } else if (typeof init === "object") {
      if (init.length !== n)
        throw new Error(`${c.name}: ${name} has ${init.length} values for ${n} elements`);
      values = [...init];
    } else {
      const draw: Record<typeof init, () => number> = {
        normal: () => rng.normal(),
        uniform: () => 2 * rng.uniform() - 1,
        positive: () => 0.5 + 1.5 * rng.uniform(),
        awayFromZero: () => (rng.uniform() < 0.5 ? -1 : 1) * (0.3 + 1.2 * rng.uniform()),
        distinct: () => pool.pop()!,
        bool: () => (rng.uniform() < 0.5 ? 1 : 0),
      };
      values = Array.from({ length: n }, draw[init]);
    }
    out[name] = hostOf(values, a.shape, dtype);
  }
  return out;
}

function specsOf(c: OpCase): Record<string, { shape: readonly number[]; dtype: DType }> {
  const specs: Record<string, { shape: readonly number[]; dtype: DType }> = {};
  for (const [k, a] of Object.entries(c.args)) specs[k] = { shape: a.shape, dtype: a.dtype ?? "float32" };
  return specs;
}

const refFeeds = (feeds: Record<string, HostTensor>): Record<string, RefTensor> =>
  Object.fromEntries(Object.entries(feeds).map(([k, v]) => [k, fromHost(v)]));

/** The inputs a gradient check differentiates by: `c.wrt`, or every float32 input of the graph. */
const wrtOf = (c: OpCase, graph: Graph): readonly string[] =>
  c.wrt ?? graph.inputs.filter((t) => t.dtype === "float32").map((t) => t.inputName!);

/** What the case traces to: the primitives its graph uses and the inputs a gradient check differentiates by. */
export function describeCase(c: OpCase): { prims: Set<PrimName>; dtype: DType; wrt: readonly string[] } {
  const { graph, outputs } = trace(specsOf(c), (t, g) => ({ y: c.build(t, g) }));
  const dtype = outputs["y"]!.dtype;
  const wrt = dtype !== "float32" ? [] : wrtOf(c, graph);
  return { prims: new Set(graph.nodes.map((n) => n.prim)), dtype, wrt };
}

/** ONNX Runtime vs the float64 reference on the case's forward graph. */
export async function checkRoundTrip(c: OpCase): Promise<void> {
  const { graph, outputs } = trace(specsOf(c), (t, g) => ({ y: c.build(t, g) }));
  const y = outputs["y"]!;
  const feeds = makeInputs(c, graph);
  const compiled = await compileGraph(graph, outputs, { threads: 1 });
  const got = (await compiled.run(feeds))["y"]!;
  const [want] = evalGraph(graph, refFeeds(feeds), [y]) as [RefTensor];
  assertAllclose(got.shape, want.shape, { what: `${c.name}: output shape`, rtol: 0, atol: 0 });
  if (got.dtype !== y.dtype)
    throw new Error(`${c.name}: ONNX Runtime returned ${got.dtype}, traced ${y.dtype}`);
  const exact = y.dtype !== "float32";
  assertAllclose(got, want, {
    what: `${c.name} (forward)`,
    rtol: exact ? 0 : (c.rtol ?? 1e-5),
    atol: exact ? 0 : (c.atol ?? 1e-5),
  });
}

const FD_STEP = 1e-5;

/** Central differences of the float64 reference loss with respect to one input. */
function numericGrad(
  graph: Graph,
  loss: Tensor,
  feeds: Record<string, RefTensor>,
  name: string,
): Float64Array {
  const x = feeds[name]!;
  const out = new Float64Array(x.data.length);
  const run = refEvaluator(graph, [loss]);
  const at = () => run(feeds)[0]!.data[0]!;
  for (let i = 0; i < x.data.length; i++) {
    const v = x.data[i]!;
    x.data[i] = v + FD_STEP;
    const up = at();
    x.data[i] = v - FD_STEP;
    const down = at();
    x.data[i] = v;
    out[i] = (up - down) / (2 * FD_STEP);
  }
  return out;
}

/** Analytic gradients (ONNX Runtime, float32) vs central differences of the float64 reference. */
export async function checkGrad(c: OpCase): Promise<void> {
  const specs = specsOf(c);
  const rng = TestRng.fromName(`${c.name}/R`);
  let wrt: readonly string[] = [];
  const { graph, outputs } = trace(specs, (t, g) => {
    const y = c.build(t, g);
    wrt = wrtOf(c, g);
    const byName = new Map(g.inputs.map((x) => [x.inputName!, x]));
    const r = g.constant(
      new HostTensor(
        Float32Array.from({ length: y.size }, () => rng.normal()),
        y.shape,
      ),
    );
    const loss = o.sum(o.mul(y, r));
    const gs = grad(
      loss,
      wrt.map((k) => byName.get(k)!),
    );
    return { loss, ...Object.fromEntries(wrt.map((k, i) => [`d_${k}`, gs[i]!])) };
  });
  const feeds = makeInputs(c, graph);
  const compiled = await compileGraph(graph, outputs, { threads: 1 });
  const got = await compiled.run(feeds);
  const ref = refFeeds(feeds);
  const loss = outputs["loss"]!;
  const [refLoss] = evalGraph(graph, ref, [loss]) as [RefTensor];
  assertAllclose(got["loss"]!, refLoss, { what: `${c.name}: loss`, rtol: 1e-4, atol: 1e-4 });
  // one absolute scale for all inputs: a gradient that is exactly zero (a softmax shift, a key
  // bias in attention) carries the float32 rounding noise of the others
  const fds = wrt.map((k) => numericGrad(graph, loss, ref, k));
  const scale = fds.reduce((m, fd) => fd.reduce((mm, v) => Math.max(mm, Math.abs(v)), m), 1e-3);
  wrt.forEach((k, i) => {
    assertAllclose(got[`d_${k}`]!.data as Float32Array, fds[i]!, {
      what: `${c.name}: d loss / d ${k} [${ref[k]!.shape}] (analytic vs finite differences)`,
      rtol: c.gradRtol ?? 2e-3,
      atol: (c.gradAtol ?? 2e-4) * scale,
    });
  });
}
