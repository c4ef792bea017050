/**
 * Primitive test cases: elementwise (broadcasting binary, comparisons, where, unary, cast) and
 * reductions. Each case is a one-primitive graph; `primitives.test.ts` runs the ONNX round trip
 * and the finite-difference gradient check on it.
 */
import type { Graph, Tensor } from "../../src/tensor/symbolic.ts";
import type { ArgSpec, Init, OpCase } from "../support/check.ts";

type UnaryPrim =
  | "neg"
  | "exp"
  | "log"
  | "sqrt"
  | "tanh"
  | "sigmoid"
  | "silu"
  | "gelu"
  | "geluTanh"
  | "erf"
  | "sin"
  | "cos"
  | "abs";

export type ElementwisePrim =
  | "add"
  | "sub"
  | "mul"
  | "div"
  | "maximum"
  | "minimum"
  | "less"
  | "greater"
  | "equal"
  | "where"
  | UnaryPrim
  | "cast"
  | "sum"
  | "max";

type Build = (t: Readonly<Record<string, Tensor>>, g: Graph) => Tensor;

/** Shape pairs every broadcasting binary primitive is tried on. */
const BINARY_SHAPES: readonly (readonly [readonly number[], readonly number[]])[] = [
  [
    [2, 3],
    [2, 3],
  ],
  [
    [3, 1, 4],
    [2, 1],
  ],
  [
    [2, 1],
    [3, 1, 4],
  ],
  [[4], []],
  [[], [2, 3]],
  [
    [2, 1, 3],
    [1, 4, 1],
  ],
];

function binaryCases(
  prim: "add" | "sub" | "mul" | "div" | "maximum" | "minimum" | "less" | "greater" | "equal",
  initA: Init,
  initB: Init,
  ints: Init | null,
): OpCase[] {
  const build: Build = (t, g) => g.apply(prim, [t["a"]!, t["b"]!], {});
  const cases: OpCase[] = BINARY_SHAPES.map(([sa, sb]) => ({
    name: `${prim} [${sa}] [${sb}]`,
    args: { a: { shape: sa, init: initA }, b: { shape: sb, init: initB } },
    build,
  }));
  if (ints) {
    cases.push({
      name: `${prim} int64 [2,3] [3]`,
      args: {
        a: { shape: [2, 3], dtype: "int64", init: { int: [-9, 9] } },
        b: { shape: [3], dtype: "int64", init: ints },
      },
      build,
    });
  }
  return cases;
}

function unaryCases(prim: UnaryPrim, init: Init): OpCase[] {
  const build: Build = (t, g) => g.apply(prim, [t["x"]!], {});
  const cases: OpCase[] = [
    { name: `${prim} [2,3,4]`, args: { x: { shape: [2, 3, 4], init } }, build },
    { name: `${prim} scalar`, args: { x: { shape: [], init } }, build },
  ];
  if (prim === "erf") {
    // both branches of a typical erf implementation, and its flat tails
    cases.push({
      name: "erf wide range",
      args: { x: { shape: [8], init: [-4, -2.7, -1.3, -0.2, 0.1, 0.9, 2.2, 3.6] } },
      build,
    });
  }
  return cases;
}

const arg = (shape: readonly number[], init?: Init, dtype?: ArgSpec["dtype"]): ArgSpec => ({
  shape,
  ...(init ? { init } : {}),
  ...(dtype ? { dtype } : {}),
});

function reduceCases(prim: "sum" | "max"): OpCase[] {
  const init: Init = prim === "max" ? "distinct" : "normal";
  const mk = (
    name: string,
    shape: readonly number[],
    axes: readonly number[],
    keepDims: boolean,
  ): OpCase => ({
    name: `${prim} ${name}`,
    args: { x: arg(shape, init) },
    build: (t, g) => g.apply(prim, [t["x"]!], { axes, keepDims }),
  });
  return [
    mk("[2,3,4] axis 1", [2, 3, 4], [1], false),
    mk("[2,3,4] axes 0,2 keepDims", [2, 3, 4], [0, 2], true),
    mk("[2,3,4] all axes", [2, 3, 4], [0, 1, 2], false),
    mk("[2,3,4] all axes keepDims", [2, 3, 4], [2, 0, 1], true),
    mk("[3,5] negative axis -1", [3, 5], [-1], false),
    mk("[2,3,4] negative axes -3,-1 keepDims", [2, 3, 4], [-3, -1], true),
    {
      name: `${prim} int64 [3,4] axis 0`,
      args: { x: arg([3, 4], { int: [-50, 50] }, "int64") },
      build: (t, g) => g.apply(prim, [t["x"]!], { axes: [0], keepDims: false }),
    },
  ];
}

const castCase = (
  name: string,
  x: ArgSpec,
  to: "float32" | "int64" | "int32" | "bool",
  wrt?: readonly string[],
): OpCase => ({
  name: `cast ${name}`,
  args: { x },
  build: (t, g) => g.apply("cast", [t["x"]!], { to }),
  ...(wrt ? { wrt } : {}),
});

export const elementwiseCases: { [K in ElementwisePrim]: OpCase[] } = {
  add: binaryCases("add", "normal", "normal", { int: [-9, 9] }),
  sub: binaryCases("sub", "normal", "normal", { int: [-9, 9] }),
  mul: binaryCases("mul", "normal", "normal", { int: [-9, 9] }),
  // integer division truncates toward zero (C and ONNX Runtime); divisors avoid 0
  div: binaryCases("div", "normal", "positive", [-4, 3, 7]),
  maximum: binaryCases("maximum", "distinct", "distinct", { int: [-9, 9] }),
  minimum: binaryCases("minimum", "distinct", "distinct", { int: [-9, 9] }),
  less: binaryCases("less", { int: [0, 3] }, { int: [0, 3] }, { int: [-9, 9] }),
  greater: binaryCases("greater", { int: [0, 3] }, { int: [0, 3] }, { int: [-9, 9] }),
  equal: binaryCases("equal", { int: [0, 2] }, { int: [0, 2] }, { int: [-2, 2] }),
  where: [
    {
      name: "where [2,3] [2,3] [2,3]",
      args: { c: arg([2, 3], "bool", "bool"), a: arg([2, 3]), b: arg([2, 3]) },
      build: (t, g) => g.apply("where", [t["c"]!, t["a"]!, t["b"]!], {}),
    },
    {
      name: "where broadcast c [2,1,3] a [1,4,3] b []",
      args: { c: arg([2, 1, 3], "bool", "bool"), a: arg([1, 4, 3]), b: arg([]) },
      build: (t, g) => g.apply("where", [t["c"]!, t["a"]!, t["b"]!], {}),
    },
    {
      name: "where broadcast c [4,1] a [3] b [1,3]",
      args: { c: arg([4, 1], "bool", "bool"), a: arg([3]), b: arg([1, 3]) },
      build: (t, g) => g.apply("where", [t["c"]!, t["a"]!, t["b"]!], {}),
    },
    {
      name: "where int64",
      args: {
        c: arg([3, 2], "bool", "bool"),
        a: arg([3, 2], undefined, "int64"),
        b: arg([2], undefined, "int64"),
      },
      build: (t, g) => g.apply("where", [t["c"]!, t["a"]!, t["b"]!], {}),
    },
  ],
  neg: [
    ...unaryCases("neg", "normal"),
    {
      name: "neg int64",
      args: { x: arg([2, 3], undefined, "int64") },
      build: (t, g) => g.apply("neg", [t["x"]!], {}),
    },
  ],
  exp: unaryCases("exp", "normal"),
  log: unaryCases("log", "positive"),
  sqrt: unaryCases("sqrt", "positive"),
  tanh: unaryCases("tanh", "normal"),
  sigmoid: unaryCases("sigmoid", "normal"),
  silu: unaryCases("silu", "normal"),
  gelu: unaryCases("gelu", "normal"),
  geluTanh: unaryCases("geluTanh", "normal"),
  erf: unaryCases("erf", "normal"),
  sin: unaryCases("sin", "normal"),
  cos: unaryCases("cos", "normal"),
  abs: unaryCases("abs", "awayFromZero"),
  cast: [
    castCase("float32 → float32", arg([2, 3]), "float32"),
    castCase(
      "float32 → int64 (truncates)",
      arg([2, 4], [-2.7, -1.2, -0.5, 0, 0.4, 1.5, 2.9, 7.2]),
      "int64",
      [],
    ),
    castCase("float32 → int32", arg([3], [-3.5, 0.2, 4.8]), "int32", []),
    castCase("float32 → bool", arg([4], [0, -0.5, 2, 0]), "bool", []),
    castCase("int64 → float32", arg([2, 3], undefined, "int64"), "float32", []),
    castCase("int64 → bool", arg([4], [0, 3, -1, 0], "int64"), "bool", []),
    castCase("bool → float32", arg([2, 2], "bool", "bool"), "float32", []),
    castCase("bool → int64", arg([3], "bool", "bool"), "int64", []),
    {
      // piecewise constant: the gradient is zero (and must not be an error)
      name: "cast float32 → int64 → float32",
      args: { x: arg([2, 3], "uniform") },
      build: (t, g) => g.apply("cast", [g.apply("cast", [t["x"]!], { to: "int64" })], { to: "float32" }),
    },
  ],
  sum: reduceCases("sum"),
  max: reduceCases("max"),
};
