/**
 * compileTrainStep: a loss function over a parameter scope becomes ONE ONNX Runtime session per batch
 * shape that does a whole step — forward, loss, backward, gradient clipping, AdamW and the EMA:
 *
 *   (params, m, v, ema, batch…, lr, bias corrections, ema decay) → (params', m', v', ema', loss, grad norm)
 *
 * The graph is traced once; every step is one `run`. State stays on the host between steps as
 * parameter maps, so checkpoints are plain safetensors.
 */

import { compileGraph, type InputSpec } from "../runtime/compile.ts";
import type { SessionOptions } from "../runtime/options.ts";
import { type CompiledGraph, type DeviceTensor, downloadAll } from "../runtime/session.ts";
import { grad } from "../tensor/autodiff.ts";
import { type HostData, HostTensor } from "../tensor/host.ts";
import { checkParams, type LoraPlan, ParamScope, type ParamSpec, type Params } from "../tensor/params.ts";
import { Graph, type Tensor } from "../tensor/symbolic.ts";
import {
  type AdamWConfig,
  adamwUpdate,
  clipByGlobalNorm,
  defaultAdamW,
  emaUpdate,
  globalNorm,
} from "./optim.ts";

/** The loss: a scalar, optionally with extra scalar/tensor metrics to return. */
export type LossFn = (
  scope: ParamScope,
  batch: Readonly<Record<string, Tensor>>,
) => Tensor | { loss: Tensor; metrics?: Record<string, Tensor> };

export interface TrainStepOptions {
  adamw?: Partial<AdamWConfig>;
  /** Clip gradients to this global norm (default: no clipping). */
  clipGradNorm?: number;
  /** Keep an EMA of the weights (default true). */
  ema?: boolean;
  session?: SessionOptions;
  /**
   * Parameters that are not trained: embedded in the step's graph as constants, with no gradient,
   * moments or EMA (a fine-tune's frozen base; split with `partitionParams`).
   */
  frozen?: Params;
  /** LoRA adapters on the model's layers (their A and B are parameters like any other; nn/lora.ts). */
  lora?: LoraPlan;
  /**
   * How frozen weights enter the graph: "constants" (default: ONNX Runtime may pre-pack them, the
   * fastest) or "inputs" fed each step (the model then holds no copy of them: less memory).
   */
  frozenAs?: "constants" | "inputs";
}

/** Optimizer state: the step count, AdamW moments and (optionally) the EMA weights. */
export interface TrainState {
  params: Params;
  m: Params;
  v: Params;
  ema: Params | null;
  step: number;
}

export interface StepResult {
  loss: number;
  gradNorm: number;
  metrics: Record<string, HostTensor>;
}

const M = (n: string) => `adam_m/${n}`;
const V = (n: string) => `adam_v/${n}`;
const E = (n: string) => `ema/${n}`;
const OUT = (n: string) => `new/${n}`;

/**
 * What a state's maps hold while its tensors are on the device: any read says how to get them back.
 */
class OnDevice extends Map<string, HostTensor<"float32">> {
  private fail(): never {
    throw new Error(
      "the training state is on the GPU after the last step: await trainStep.sync(state) before reading its tensors",
    );
  }
  override get(_k: string): never {
    return this.fail();
  }
  override has(_k: string): never {
    return this.fail();
  }
  override forEach(): never {
    return this.fail();
  }
  override entries(): never {
    return this.fail();
  }
  override keys(): never {
    return this.fail();
  }
  override values(): never {
    return this.fail();
  }
  override [Symbol.iterator](): never {
    return this.fail();
  }
  override get size(): never {
    return this.fail();
  }
}

export class TrainStep {
  /**
   * After a step on a GPU provider: the state's tensors, still on the device, by input name (the
   * state's own maps are `OnDevice` meanwhile; `sync` brings them back).
   */
  private resident: { state: TrainState; tensors: Map<string, DeviceTensor> } | null = null;

  /** Frozen weights fed to each step (TrainStepOptions.frozenAs "inputs"). */
  readonly frozenFeeds: Params = new Map();

  /** The state's tensors by graph input name: params, moments and EMA. */
  private readonly stateInputs: [input: string, of: "params" | "m" | "v" | "ema", param: string][] = [];

  constructor(
    readonly specs: readonly ParamSpec[],
    readonly batchSpecs: Readonly<Record<string, InputSpec>>,
    readonly adamw: AdamWConfig,
    readonly hasEma: boolean,
    readonly metricNames: readonly string[],
    private readonly graph: CompiledGraph,
    private readonly session: SessionOptions = {},
  ) {
    for (const s of specs) {
      this.stateInputs.push([s.name, "params", s.name], [M(s.name), "m", s.name], [V(s.name), "v", s.name]);
      if (hasEma) this.stateInputs.push([E(s.name), "ema", s.name]);
    }
  }

  /**
   * Brings the state's tensors back into its maps after steps that left them on the GPU (a no-op
   * otherwise, and on the CPU). Read `state.params`, `m`, `v` or `ema` only after it; the next step
   * starts again from the host tensors.
   */
  async sync(state: TrainState): Promise<void> {
    if (this.resident?.state !== state) return;
    const { tensors } = this.resident;
    this.resident = null;
    const host = await downloadAll(Object.fromEntries(tensors), this.session);
    for (const t of tensors.values()) t.dispose();
    const maps = { params: new Map(), m: new Map(), v: new Map(), ema: new Map() } as Record<string, Params>;
    for (const [input, of, param] of this.stateInputs)
      maps[of]!.set(param, host[input] as HostTensor<"float32">);
    state.params = maps["params"]!;
    state.m = maps["m"]!;
    state.v = maps["v"]!;
    state.ema = this.hasEma ? maps["ema"]! : null;
  }

  /** Fresh optimizer state around `params` (moments zero, EMA = params). */
  initState(params: Params): TrainState {
    checkParams(this.specs, params);
    const zeros = (): Params => new Map([...params].map(([k, p]) => [k, HostTensor.zeros(p.shape)]));
    const ema = this.hasEma ? new Map([...params].map(([k, p]) => [k, p.clone()])) : null;
    return { params, m: zeros(), v: zeros(), ema, step: 0 };
  }

  /**
   * One optimizer step; replaces the tensors in `state` with the updated ones and increments
   * `state.step`. `emaDecay` is the EMA decay for this step (0 copies the weights).
   */
  async step(
    state: TrainState,
    batch: Readonly<Record<string, HostTensor>>,
    lr: number,
    emaDecay = 0.999,
  ): Promise<StepResult> {
    const t = state.step + 1;
    const feeds: Record<string, HostTensor | DeviceTensor> = {
      lr: HostTensor.scalar(lr),
      bc1: HostTensor.scalar(1 - this.adamw.beta1 ** t),
      bc2: HostTensor.scalar(1 - this.adamw.beta2 ** t),
    };
    if (this.hasEma) feeds["ema_decay"] = HostTensor.scalar(emaDecay);
    for (const [k, v] of Object.entries(batch)) feeds[k] = v;
    for (const [k, v] of this.frozenFeeds) feeds[k] = v;
    const onDevice = this.resident?.state === state ? this.resident.tensors : null;
    if (this.resident && !onDevice) await this.sync(this.resident.state); // another state's turn
    for (const [input, of, param] of this.stateInputs) {
      feeds[input] = onDevice ? onDevice.get(input)! : state[of]!.get(param)!;
    }
    const { host: out, device } = await this.graph.runOnDevice(
      feeds,
      undefined,
      onDevice ? undefined : this.inPlace(feeds),
    );
    if (onDevice) for (const d of onDevice.values()) d.dispose();
    const kept = this.stateInputs.filter(([input]) => device[OUT(input)]);
    if (kept.length > 0) {
      // the updated tensors stay on the GPU for the next step; the state's maps wait for `sync`
      if (kept.length !== this.stateInputs.length)
        throw new Error("internal: the train step left only part of its state on the device");
      const tensors = new Map<string, DeviceTensor>();
      for (const [input] of kept) tensors.set(input, device[OUT(input)]!);
      this.resident = { state, tensors };
      state.params = new OnDevice();
      state.m = new OnDevice();
      state.v = new OnDevice();
      if (this.hasEma) state.ema = new OnDevice();
    } else {
      this.resident = null;
      for (const [input, of, param] of this.stateInputs) {
        state[of]!.set(param, out[OUT(input)] as HostTensor<"float32">);
      }
    }
    state.step = t;
    const metrics: Record<string, HostTensor> = {};
    for (const k of this.metricNames) metrics[k] = out[`metric/${k}`]!;
    return {
      loss: (out["loss"]!.data as Float32Array)[0]!,
      gradNorm: (out["grad_norm"]!.data as Float32Array)[0]!,
      metrics,
    };
  }

  /**
   * The output buffers a host step may update in place: each moment's and EMA tensor's own (their
   * only reader in the graph is their own update, whose last kernel writes the output — elementwise,
   * so each element is read before it is written). Weights are not: forward and backward kernels
   * read them, and ONNX Runtime may order a weight's update before one of them. A buffer that any
   * other feed shares (say, an EMA that is the weights' own map) gets a fresh output.
   */
  private inPlace(feeds: Readonly<Record<string, HostTensor | DeviceTensor>>): Map<string, HostData> {
    const hosts = Object.values(feeds).filter((t): t is HostTensor => t instanceof HostTensor);
    const alone = unsharedMemory(hosts.map((t) => t.data));
    const into = new Map<string, HostData>();
    for (const [input, of] of this.stateInputs) {
      const t = feeds[input];
      if (of !== "params" && t instanceof HostTensor && alone.has(t.data)) into.set(OUT(input), t.data);
    }
    return into;
  }

  dispose(): void {
    if (this.resident) for (const d of this.resident.tensors.values()) d.dispose();
    this.resident = null;
    this.graph.dispose();
  }
}

/** The arrays whose bytes no other array of `all` overlaps (views of one buffer told apart by their ranges). */
function unsharedMemory(all: readonly HostData[]): Set<HostData> {
  const byBuffer = new Map<ArrayBufferLike, HostData[]>();
  for (const d of all) {
    const views = byBuffer.get(d.buffer);
    if (views) views.push(d);
    else byBuffer.set(d.buffer, [d]);
  }
  const alone = new Set<HostData>();
  for (const views of byBuffer.values()) {
    views.sort((a, b) => a.byteOffset - b.byteOffset);
    let reach = -1; // the furthest end of the views before this one
    views.forEach((d, i) => {
      const end = d.byteOffset + d.byteLength;
      const next = views[i + 1];
      if (reach <= d.byteOffset && (!next || next.byteOffset >= end)) alone.add(d);
      reach = Math.max(reach, end);
    });
  }
  return alone;
}

/** Traces the loss with symbolic parameters and batch, differentiates it and appends the updates. */
export async function compileTrainStep(
  lossFn: LossFn,
  batchSpecs: Readonly<Record<string, InputSpec>>,
  opts: TrainStepOptions = {},
): Promise<TrainStep> {
  const adamw = { ...defaultAdamW, ...opts.adamw };
  const hasEma = opts.ema ?? true;
  const graph = new Graph();
  const batch: Record<string, Tensor> = {};
  for (const [k, s] of Object.entries(batchSpecs)) batch[k] = graph.input(k, s.shape, s.dtype ?? "float32");
  const lr = graph.input("lr", []);
  const bc1 = graph.input("bc1", []);
  const bc2 = graph.input("bc2", []);
  const emaDecay = hasEma ? graph.input("ema_decay", []) : null;

  const scope = ParamScope.root(graph, {
    ...(opts.frozen ? { frozen: opts.frozen } : {}),
    ...(opts.lora ? { lora: opts.lora } : {}),
    frozenFed: opts.frozenAs === "inputs",
  });
  const res = lossFn(scope, batch);
  const loss = res instanceof Object && "loss" in res ? res.loss : (res as Tensor);
  const metrics = res instanceof Object && "loss" in res ? (res.metrics ?? {}) : {};
  if (loss.size !== 1)
    throw new Error(`compileTrainStep: the loss must be a scalar, got shape [${loss.shape.join(", ")}]`);
  const specs = scope.specs;
  const params = scope.tensors;
  let grads = grad(loss, params);
  const norm = globalNorm(grads);
  if (opts.clipGradNorm !== undefined) grads = clipByGlobalNorm(grads, norm, opts.clipGradNorm);

  const outputs: Record<string, Tensor> = { loss, grad_norm: norm };
  for (const [k, v] of Object.entries(metrics)) outputs[`metric/${k}`] = v;
  specs.forEach((s, i) => {
    const m = graph.input(M(s.name), s.shape);
    const v = graph.input(V(s.name), s.shape);
    const u = adamwUpdate(params[i]!, grads[i]!, m, v, { lr, bc1, bc2 }, adamw);
    outputs[OUT(s.name)] = u.p;
    outputs[OUT(M(s.name))] = u.m;
    outputs[OUT(V(s.name))] = u.v;
    if (emaDecay) outputs[OUT(E(s.name))] = emaUpdate(graph.input(E(s.name), s.shape), u.p, emaDecay);
  });
  // on a GPU provider the updated parameters, moments and EMA stay on the device between steps
  const stateOutputs = Object.keys(outputs).filter((k) => k.startsWith("new/"));
  const session = { ...opts.session, deviceOutputs: stateOutputs };
  const compiled = await compileGraph(graph, outputs, session);
  const step = new TrainStep(specs, batchSpecs, adamw, hasEma, Object.keys(metrics), compiled, session);
  if (opts.frozenAs === "inputs" && opts.frozen)
    for (const s of scope.frozenSpecs) step.frozenFeeds.set(s.name, opts.frozen.get(s.name)!);
  return step;
}

/** Traces `fn` over a fresh scope only to learn its parameters (names, shapes, initializers). */
export function paramSpecsOf(
  fn: (scope: ParamScope, graph: Graph) => unknown,
  opts: { lora?: LoraPlan } = {},
): ParamSpec[] {
  const graph = new Graph();
  const scope = ParamScope.root(graph, opts);
  fn(scope, graph);
  return scope.specs;
}
