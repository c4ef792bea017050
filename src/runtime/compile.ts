/**
 * Tracing a TypeScript function into a compiled graph: declare the inputs, call the function on
 * symbolic tensors, emit ONNX for its outputs and open (or reuse) a session.
 */
import { emitOnnx } from "../onnx/emit.ts";
import type { EmitPasses } from "../onnx/passes/options.ts";
import type { DType, HostTensor } from "../tensor/host.ts";
import { Graph, type Tensor } from "../tensor/symbolic.ts";
import { defaultExecutionProviders, type SessionOptions } from "./options.ts";
import { type CompiledGraph, loadGraph, nchwcBlockSize } from "./session.ts";

export interface InputSpec {
  shape: readonly number[];
  dtype?: DType;
}

export type Outputs = Readonly<Record<string, Tensor>>;

/** Traces `fn` over symbolic inputs with the given specs; returns the graph and its outputs. */
export function trace<S extends Record<string, InputSpec>>(
  specs: S,
  fn: (inputs: { [K in keyof S]: Tensor }, graph: Graph) => Outputs,
): { graph: Graph; outputs: Outputs } {
  const graph = new Graph();
  const inputs = {} as { [K in keyof S]: Tensor };
  for (const [name, s] of Object.entries(specs)) {
    (inputs as Record<string, Tensor>)[name] = graph.input(name, s.shape, s.dtype ?? "float32");
  }
  return { graph, outputs: fn(inputs, graph) };
}

export interface CompileOptions extends SessionOptions {
  /**
   * The emission passes (onnx/passes/options.ts) to switch on or off over the defaults: on CPU
   * sessions every pass, with ONNX Runtime's own NCHWc block; on GPU sessions the GPU's defaults.
   */
  passes?: Partial<EmitPasses>;
}

/** Emits the graph's outputs as ONNX and opens a session for them. */
export async function compileGraph(
  graph: Graph,
  outputs: Outputs,
  opts: CompileOptions = {},
): Promise<CompiledGraph> {
  const { passes, ...session } = opts;
  const cpuOnly = (session.executionProviders ?? defaultExecutionProviders()).every((p) => p === "cpu");
  const bytes = emitOnnx(graph, sessionOutputs(outputs), {
    target: cpuOnly ? "cpu" : "gpu",
    passes: { nchwc: cpuOnly && passes?.nchwc === undefined ? await nchwcBlockSize() : 0, ...passes },
  });
  return loadGraph(
    bytes,
    graph.inputs.map((t) => ({ name: t.inputName!, dtype: t.dtype, shape: t.shape })),
    Object.entries(outputs).map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape })),
    session,
  );
}

/** The value `t` reshapes (through a chain of reshapes), or `t` itself. */
function beforeReshapes(t: Tensor): Tensor {
  const p = t.graph.producer(t);
  return p?.prim === "reshape" ? beforeReshapes(p.inputs[0]!) : t;
}

/**
 * What a compiled graph's session returns for `outputs`: each output before its final reshapes
 * (ONNX Runtime copies a graph output that a Reshape produces; `CompiledGraph.run` gives the data
 * its declared shape without a copy).
 */
export function sessionOutputs(outputs: Outputs): Outputs {
  return Object.fromEntries(Object.entries(outputs).map(([name, t]) => [name, beforeReshapes(t)]));
}

/** Traces and compiles in one step. */
export async function compile<S extends Record<string, InputSpec>>(
  specs: S,
  fn: (inputs: { [K in keyof S]: Tensor }, graph: Graph) => Outputs,
  opts: CompileOptions = {},
): Promise<CompiledGraph> {
  const { graph, outputs } = trace(specs, fn);
  return compileGraph(graph, outputs, opts);
}

/** Runs a traced function once on host values (compiles, caches the session, runs). */
export async function evaluate(
  inputs: Readonly<Record<string, HostTensor>>,
  fn: (inputs: Record<string, Tensor>, graph: Graph) => Outputs,
  opts: CompileOptions = {},
): Promise<Record<string, HostTensor>> {
  const specs: Record<string, InputSpec> = {};
  for (const [k, v] of Object.entries(inputs)) specs[k] = { shape: v.shape, dtype: v.dtype };
  const g = await compile(specs, fn, opts);
  return g.run(inputs);
}
