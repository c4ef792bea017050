/**
 * Graph → ONNX model. Keeps only the nodes the requested outputs need, turns constants into
 * initializers, names values (graph inputs keep their names, e.g. the dotted parameter names), runs
 * each primitive's lowering, then the node-list passes the options ask for (passes/options.ts):
 * "fuseGroupNorm", then "keepBlocked".
 */
import type { PrimName } from "../tensor/primitives.ts";
import type { Graph, Node, Tensor } from "../tensor/symbolic.ts";
import type { LowerCtx, RewriteCtx } from "./context.ts";
import { lowerings, OPSET } from "./lowering.ts";
import { fuseGroupNorms } from "./passes/fuse-groupnorm.ts";
import { keepBlocked } from "./passes/nchwc-layout.ts";
import { defaultPasses, type EmitPasses, type Target } from "./passes/options.ts";
import { encodeModel, type OnnxAttr, type OnnxModel, type OnnxNode, type OnnxTensor } from "./proto.ts";

export interface EmitOptions {
  /** Graph name in the model. */
  name?: string;
  /** The device the graph is for (default "cpu"): it picks the default passes (`defaultPasses`). */
  target?: Target;
  /** Passes to switch on or off, or to set, over the target's defaults (passes/options.ts). */
  passes?: Partial<EmitPasses>;
}

/** Primitives only a backward pass has: their graphs read forward values in the plain layout. */
const BACKWARD_PRIMS: ReadonlySet<string> = new Set(["convWeightGrad", "invStdDev"]);

type AnyLowering = (n: Node, c: LowerCtx) => void;

/** The ONNX model (as a plain object) computing `outputs` from the graph's inputs. */
export function toOnnx(
  graph: Graph,
  outputs: Readonly<Record<string, Tensor>>,
  opts: EmitOptions = {},
): OnnxModel {
  const outEntries = Object.entries(outputs);
  for (const [name, t] of outEntries) {
    if (t.graph !== graph) throw new Error(`output "${name}" belongs to another graph`);
  }
  // which nodes are needed
  const needed = new Set<number>();
  const stack = outEntries.map(([, t]) => t);
  while (stack.length > 0) {
    const t = stack.pop()!;
    if (needed.has(t.id)) continue;
    needed.add(t.id);
    const p = graph.producer(t);
    if (p) for (const i of p.inputs) stack.push(i);
  }

  const names = new Map<number, string>();
  for (const t of graph.inputs) names.set(t.id, t.inputName!);
  // every ONNX value needs its own name: internal names (t12, col_3, …) skip the user's names
  const taken = new Set<string>([...names.values(), ...outEntries.map(([name]) => name)]);
  for (const [name] of outEntries) {
    if (graph.inputs.some((t) => t.inputName === name))
      throw new Error(`output "${name}" has the name of a graph input; give the output another name`);
  }
  const fresh = (base: string): string => {
    let n = base;
    for (let k = 1; taken.has(n); k++) n = `${base}_${k}`;
    taken.add(n);
    return n;
  };
  const passes: Readonly<EmitPasses> = { ...defaultPasses(opts.target), ...opts.passes };
  const nodes: OnnxNode[] = [];
  const initializers: OnnxTensor[] = [];
  let tmpCount = 0;
  const i64Cache = new Map<string, string>();
  const identities: [string, string][] = [];
  const claimed = new Set<number>();
  for (const [name, t] of outEntries) {
    if (graph.producer(t) && !claimed.has(t.id) && !graph.inputs.includes(t)) {
      names.set(t.id, name);
      claimed.add(t.id);
    } else identities.push([name, `t${t.id}`]);
  }
  const nameOf = (t: Tensor): string => {
    let n = names.get(t.id);
    if (!n) {
      n = fresh(`t${t.id}`);
      names.set(t.id, n);
    }
    return n;
  };
  for (const [id, value] of graph.constants) {
    if (!needed.has(id)) continue;
    const name = fresh(`t${id}`);
    initializers.push({ name, dtype: value.dtype, dims: value.shape, data: value.data });
    names.set(id, name);
  }

  const tmp = (hint: string): string => fresh(`${hint}_${tmpCount++}`);
  const i64 = (values: readonly number[]): string => {
    const key = values.join(",");
    let nm = i64Cache.get(key);
    if (!nm) {
      nm = fresh(`c_i64_${i64Cache.size}`);
      i64Cache.set(key, nm);
      initializers.push({
        name: nm,
        dtype: "int64",
        dims: [values.length],
        data: BigInt64Array.from(values, BigInt),
      });
    }
    return nm;
  };
  const f32 = (dims: readonly number[], data: Float32Array): string => {
    const nm = fresh(`c_f32_${tmpCount++}`);
    initializers.push({ name: nm, dtype: "float32", dims, data });
    return nm;
  };
  for (const n of graph.nodes) {
    if (!needed.has(n.output.id)) continue;
    const ctx: LowerCtx = {
      ins: n.inputs.map(nameOf),
      out: nameOf(n.output),
      emit(opType, inputs, outs, attrs?: Record<string, OnnxAttr>, domain?: string) {
        nodes.push({
          opType,
          inputs,
          outputs: outs,
          ...(attrs ? { attributes: attrs } : {}),
          ...(domain ? { domain } : {}),
        });
      },
      tmp,
      passes,
      i64,
      f32: (value) => f32([], Float32Array.of(value)),
    };
    (lowerings[n.prim as PrimName] as unknown as AnyLowering)(n, ctx);
  }
  const shapes = new Map<string, readonly number[]>();
  for (const n of graph.nodes) if (needed.has(n.output.id)) shapes.set(nameOf(n.output), n.output.shape);
  for (const t of graph.inputs) shapes.set(nameOf(t), t.shape);
  for (const [id, value] of graph.constants) {
    const nm = names.get(id);
    if (nm) shapes.set(nm, value.shape);
  }
  const outputValues = new Set(outEntries.map(([name, t]) => names.get(t.id) ?? name));
  const data = new Map(initializers.map((t) => [t.name, t.data]));
  const rewrite: RewriteCtx = {
    tmp,
    i64,
    f32,
    shape: (name) => shapes.get(name),
    isOutput: (name) => outputValues.has(name),
    constant: (name) => {
      const d = data.get(name) ?? initializers.find((t) => t.name === name)?.data;
      return d instanceof Float32Array || d instanceof BigInt64Array ? d : undefined;
    },
  };
  // (the passes' results are assigned element by element: a spread of a large graph's node list
  // overflows the call stack)
  if (passes.fuseGroupNorm) replaceAll(nodes, fuseGroupNorms(nodes, rewrite));
  const backward = graph.nodes.some((n) => needed.has(n.output.id) && BACKWARD_PRIMS.has(n.prim));
  const keep = passes.keepBlocked === "inference" ? !backward : passes.keepBlocked;
  if (passes.nchwc > 0 && keep) replaceAll(nodes, keepBlocked(nodes, { ...rewrite, block: passes.nchwc }));
  // a fused group norm leaves its LayerNormalization's shape constant unread: ONNX Runtime warns
  const read = new Set(nodes.flatMap((n) => n.inputs));
  const kept = initializers.filter((t) => read.has(t.name) || outputValues.has(t.name));
  replaceAll(initializers, kept);
  for (const [outName, src] of identities) {
    const t = outputs[outName]!;
    nodes.push({ opType: "Identity", inputs: [names.get(t.id) ?? src], outputs: [outName] });
  }

  return {
    opsetVersion: OPSET,
    irVersion: 8,
    producerName: "diffuse",
    graph: {
      name: opts.name ?? "diffuse",
      nodes,
      inputs: graph.inputs.map((t) => ({ name: t.inputName!, dtype: t.dtype, shape: t.shape })),
      outputs: outEntries.map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape })),
      initializers,
    },
  };
}

/** Makes `list` hold `items` (no spread: a large list would overflow the call stack). */
function replaceAll<T>(list: T[], items: readonly T[]): void {
  list.length = items.length;
  for (let i = 0; i < items.length; i++) list[i] = items[i]!;
}

/** ONNX protobuf bytes for the graph's `outputs`. */
export function emitOnnx(
  graph: Graph,
  outputs: Readonly<Record<string, Tensor>>,
  opts: EmitOptions = {},
): Uint8Array {
  return encodeModel(toOnnx(graph, outputs, opts));
}
