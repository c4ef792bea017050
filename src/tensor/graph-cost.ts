/**
 * What running a traced graph costs, read off the graph before anything is compiled: the peak of the
 * values alive at once while its nodes run in order (an estimate of the working memory an executor
 * that frees each value after its last use needs), the bytes of its embedded constants (the weights of
 * an inference graph), and its multiply-accumulates (convolutions and matrix products: the time).
 *
 * Liveness: a node's output is allocated when the node runs and freed after the last node that reads
 * it; graph inputs and outputs stay alive throughout. A reshape is a view of its input (ONNX Runtime
 * aliases it), so it allocates nothing and keeps its input alive as long as it is read.
 */
import { sizeOf } from "./host.ts";
import type { Graph, Tensor } from "./symbolic.ts";

export interface GraphCost {
  /** Largest total of values alive at once (bytes), inputs and outputs included. */
  peakBytes: number;
  /** Bytes of the graph inputs (alive throughout; the weights of a graph that takes them as inputs). */
  inputBytes: number;
  /** Bytes of the embedded constants (weights). */
  constantBytes: number;
  /** Multiply-accumulates of the convolutions and matrix products. */
  macs: number;
}

const BYTES = { float32: 4, int64: 8, int32: 4, bool: 1 } as const;
const bytesOf = (t: Tensor) => sizeOf(t.shape) * BYTES[t.dtype];

export function graphCost(graph: Graph, outputs: readonly Tensor[]): GraphCost {
  // a reshape's output shares its input's storage: values are tracked by their storage's id
  const storage = new Map<number, number>();
  const idOf = (t: Tensor) => storage.get(t.id) ?? t.id;
  const lastUse = new Map<number, number>();
  graph.nodes.forEach((node, i) => {
    if (node.prim === "reshape") storage.set(node.output.id, idOf(node.inputs[0]!));
    for (const x of node.inputs) lastUse.set(idOf(x), i);
  });
  // never freed: inputs (fed), constants (embedded) and outputs (returned)
  const pinned = new Set([...graph.inputs.map((t) => t.id), ...graph.constants.keys(), ...outputs.map(idOf)]);

  const size = new Map<number, number>();
  let live = 0;
  for (const x of graph.inputs) live += bytesOf(x);
  const inputBytes = live;
  let peak = live;
  let macs = 0;
  graph.nodes.forEach((node, i) => {
    const out = node.output;
    if (node.prim !== "reshape") {
      size.set(out.id, bytesOf(out));
      live += bytesOf(out);
      peak = Math.max(peak, live);
    }
    if (node.prim === "matmul") {
      const a = node.inputs[0]!;
      macs += sizeOf(out.shape) * a.shape[a.shape.length - 1]!;
    } else if (node.prim === "conv") {
      // each output element reads cin/group × kh × kw inputs (the weight is [cout, cin/group, kh, kw])
      macs += sizeOf(out.shape) * sizeOf(node.inputs[1]!.shape.slice(1));
    } else if (node.prim === "convTranspose") {
      // each input element feeds cout/group × kh × kw outputs (the weight is [cin, cout/group, kh, kw])
      macs += sizeOf(node.inputs[0]!.shape) * sizeOf(node.inputs[1]!.shape.slice(1));
    }
    for (const x of new Set(node.inputs.map(idOf))) {
      if (lastUse.get(x) === i && !pinned.has(x)) live -= size.get(x) ?? 0;
    }
    // a value nobody reads is freed at once
    if (node.prim !== "reshape" && !lastUse.has(out.id) && !pinned.has(out.id)) live -= bytesOf(out);
  });
  let constantBytes = 0;
  for (const c of graph.constants.values()) constantBytes += c.data.byteLength;
  return { peakBytes: peak, inputBytes, constantBytes, macs };
}
