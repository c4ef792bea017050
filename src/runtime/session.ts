/**
 * ONNX Runtime sessions: the only module that imports onnxruntime (with `capi.ts`).
 *
 * A compiled graph is an ONNX model plus a session; sessions are cached by the model bytes (a graph
 * traced for one shape is one model) and by the options. Intra-op threads default to all cores.
 * CPU sessions go through ONNX Runtime's C API (`capi.ts`: outputs written straight into JavaScript
 * memory) where it loads, GPU sessions through onnxruntime-node. `run` is synchronous inside ONNX
 * Runtime and blocks its thread: long work (training, sampling) runs in a worker thread (`worker.ts`).
 */
// first: ONNX Runtime reads ORT_DISABLE_TELEMETRY when its environment is created
import "./telemetry.ts";
import { createHash } from "node:crypto";
import * as ort from "onnxruntime-node";
import { OPSET } from "../onnx/lowering.ts";
import { NCHWC_DOMAIN } from "../onnx/passes/nchwc.ts";
import { encodeModel } from "../onnx/proto.ts";
import { type DType, formatShape, type HostData, HostTensor, sameShape } from "../tensor/host.ts";
import { capiEnabled, type NativeFeed, NativeSession, nativeApi } from "./capi.ts";
import {
  defaultArena,
  defaultExecutionProviders,
  defaultProfile,
  defaultSpin,
  defaultThreads,
  type ExecutionProvider,
  type SessionOptions,
} from "./options.ts";

export type Feeds = Readonly<Record<string, HostTensor>>;
/** Feeds that may include tensors already on the device. */
export type DeviceFeeds = Readonly<Record<string, HostTensor | DeviceTensor>>;

/**
 * An output left in a GPU provider's memory (`SessionOptions.deviceOutputs`): feed it to a later
 * run of a graph on the same provider, or read it back with `downloadAll`. `dispose` frees it.
 */
export class DeviceTensor {
  private disposed = false;

  constructor(
    /** ONNX Runtime's tensor (location "gpu-buffer"). */
    readonly value: ort.Tensor,
    readonly dtype: DType,
    readonly shape: readonly number[],
  ) {}

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.value.dispose();
  }

  get isDisposed(): boolean {
    return this.disposed;
  }
}

/** The outputs a session keeps on its device: `deviceOutputs` where the first provider is WebGPU. */
function keptOnDevice(opts: SessionOptions, providers: readonly ExecutionProvider[]): ReadonlySet<string> {
  return providers[0] === "webgpu" ? new Set(opts.deviceOutputs ?? []) : new Set();
}

function toOrt(t: HostTensor): ort.Tensor {
  const type =
    t.dtype === "float32"
      ? "float32"
      : t.dtype === "int64"
        ? "int64"
        : t.dtype === "int32"
          ? "int32"
          : "bool";
  return new ort.Tensor(type, t.data as never, t.shape as number[]);
}

function fromOrtType(type: string): DType {
  if (type === "float32" || type === "int64" || type === "int32" || type === "bool") return type;
  throw new Error(`unsupported output type ${type}`);
}

function fromOrt(t: ort.Tensor): HostTensor {
  const dims = t.dims as readonly number[];
  switch (t.type) {
    case "float32":
      return new HostTensor(t.data as Float32Array, dims);
    case "int64":
      return new HostTensor(t.data as BigInt64Array, dims);
    case "int32":
      return new HostTensor(t.data as Int32Array, dims);
    case "bool":
      return new HostTensor(t.data as Uint8Array, dims);
    default:
      throw new Error(`unsupported output type ${t.type}`);
  }
}

export interface ValueSpec {
  name: string;
  dtype: DType;
  shape: readonly number[];
}

/** The feed for an input, which must have the input's exact shape and dtype. */
function checkedFeed(feeds: DeviceFeeds, spec: ValueSpec): HostTensor | DeviceTensor {
  const t = feeds[spec.name];
  if (!t) throw new Error(`missing input "${spec.name}" ${formatShape(spec.shape)} ${spec.dtype}`);
  if (t.dtype !== spec.dtype || !sameShape(t.shape, spec.shape)) {
    throw new Error(
      `input "${spec.name}" must be ${formatShape(spec.shape)} ${spec.dtype}, got ${formatShape(t.shape)} ${t.dtype}`,
    );
  }
  return t;
}

/** A session over one ONNX model, with checked feeds. */
export class CompiledGraph {
  private disposed = false;
  private readonly outputShapes: ReadonlyMap<string, readonly number[]>;

  constructor(
    /** The session: onnxruntime-node's, or one opened through the C API (CPU only). */
    private readonly session: ort.InferenceSession | NativeSession,
    readonly inputs: readonly ValueSpec[],
    readonly outputs: readonly ValueSpec[],
    /** The session-cache key ("" for a session outside the cache). */
    readonly key: string,
    /** The outputs this session leaves on its GPU provider (`SessionOptions.deviceOutputs`). */
    readonly onDevice: ReadonlySet<string> = new Set(),
  ) {
    this.outputShapes = new Map(outputs.map((o) => [o.name, o.shape]));
  }

  /** How the session is reached: ONNX Runtime's C API (CPU sessions where it loads) or onnxruntime-node. */
  get binding(): "c-api" | "onnxruntime-node" {
    return this.session instanceof NativeSession ? "c-api" : "onnxruntime-node";
  }

  /** Runs the graph. Every input must be fed with its exact shape and dtype. */
  async run(feeds: Feeds, outputNames?: readonly string[]): Promise<Record<string, HostTensor>> {
    if (this.onDevice.size > 0)
      throw new Error("this graph keeps outputs on the device (deviceOutputs): run it with runOnDevice");
    return (await this.runOnDevice(feeds, outputNames)).host;
  }

  /**
   * Runs the graph with feeds that may already be on the device; the outputs named in
   * `deviceOutputs` come back as `DeviceTensor`s (where the provider keeps them), the rest as host
   * tensors. On the C API binding, an output named in `into` is written into that host buffer (of
   * its dtype and size) instead of a fresh one — a train step's moments updated in place; the caller
   * makes sure no input still to be read shares it. Elsewhere `into` is ignored.
   */
  async runOnDevice(
    feeds: DeviceFeeds,
    outputNames?: readonly string[],
    into?: ReadonlyMap<string, HostData>,
  ): Promise<{ host: Record<string, HostTensor>; device: Record<string, DeviceTensor> }> {
    if (this.disposed) throw new Error("run on a disposed graph");
    if (this.session instanceof NativeSession)
      return { host: await this.runNative(feeds, outputNames, into), device: {} };
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const spec of this.inputs) {
      const t = checkedFeed(feeds, spec);
      if (t instanceof DeviceTensor && t.isDisposed) throw new Error(`input "${spec.name}" was disposed`);
      ortFeeds[spec.name] = t instanceof DeviceTensor ? t.value : toOrt(t);
    }
    const res = outputNames
      ? await this.session.run(ortFeeds, outputNames as string[])
      : await this.session.run(ortFeeds);
    const host: Record<string, HostTensor> = {};
    const device: Record<string, DeviceTensor> = {};
    for (const [k, v] of Object.entries(res)) {
      // the graph may return an output before a final reshape (compileGraph): give it its shape
      const shape = this.outputShapes.get(k);
      const ov = v as ort.Tensor;
      if (ov.location !== "cpu") {
        const dims = ov.dims as readonly number[];
        device[k] = new DeviceTensor(ov, fromOrtType(ov.type), shape ?? dims);
        continue;
      }
      const t = fromOrt(ov);
      host[k] = shape && !sameShape(shape, t.shape) ? t.reshape(shape) : t;
    }
    return { host, device };
  }

  private async runNative(
    feeds: DeviceFeeds,
    outputNames?: readonly string[],
    into?: ReadonlyMap<string, HostData>,
  ): Promise<Record<string, HostTensor>> {
    const session = this.session as NativeSession;
    const native = new Map<string, NativeFeed>();
    for (const spec of this.inputs) {
      const t = checkedFeed(feeds, spec);
      if (t instanceof DeviceTensor)
        throw new Error(
          `input "${spec.name}" is on a GPU, and this graph runs on the CPU: read it back first`,
        );
      native.set(spec.name, { dtype: t.dtype, shape: t.shape, data: t.data });
    }
    // as onnxruntime-node does: the run starts on a later turn of the event loop
    await new Promise<void>((resolve) => setImmediate(resolve));
    const res = session.run(native, outputNames ?? this.outputs.map((o) => o.name), into);
    const host: Record<string, HostTensor> = {};
    for (const [k, { data, dims }] of Object.entries(res)) {
      // the graph may return an output before a final reshape (compileGraph): give it its shape
      host[k] = new HostTensor(data, this.outputShapes.get(k) ?? dims);
    }
    return host;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const [k, v] of cache) if (v === this) cache.delete(k);
    if (this.session instanceof NativeSession) this.session.release();
    else void this.session.release();
  }
}

const cache = new Map<string, CompiledGraph>();
const pending = new Map<string, Promise<CompiledGraph>>();

function cacheKey(bytes: Uint8Array, outputs: readonly ValueSpec[], opts: SessionOptions): string {
  const h = createHash("sha256").update(bytes);
  h.update(
    JSON.stringify([
      // the declared output shapes are the graph's too: a model may return an output before its
      // final reshape (compileGraph), so the same bytes can stand for graphs with other shapes
      outputs.map((o) => [o.name, o.shape]),
      opts.threads ?? defaultThreads(),
      opts.executionProviders ?? defaultExecutionProviders(),
      opts.optimization ?? "all",
      opts.spin ?? defaultSpin(),
      [...(opts.deviceOutputs ?? [])].sort(),
      capiEnabled(),
      opts.profile ?? defaultProfile() ?? null,
      opts.arena ?? defaultArena(),
    ]),
  );
  return h.digest("hex");
}

let blockProbe: Promise<number> | undefined;

/**
 * The channel block of ONNX Runtime's NCHWc convolution kernel on this CPU (8 with AVX2, 16 with
 * AVX-512), or 0 where it has none or DIFFUSE_NCHWC=0. Asked of ONNX Runtime itself: a ReorderInput of
 * 4 channels pads them to one block, so its output's channel count is the block size.
 */
export function nchwcBlockSize(): Promise<number> {
  const env = process.env["DIFFUSE_NCHWC"];
  if (env !== undefined && env !== "0" && env !== "1")
    throw new Error(`DIFFUSE_NCHWC must be 0 or 1, got "${env}"`);
  if (env === "0") return Promise.resolve(0);
  blockProbe ??= (async () => {
    const bytes = encodeModel({
      opsetVersion: OPSET,
      irVersion: 8,
      producerName: "diffuse",
      graph: {
        name: "nchwc_probe",
        nodes: [
          { opType: "ReorderInput", domain: NCHWC_DOMAIN, inputs: ["x"], outputs: ["y"] },
          { opType: "Shape", inputs: ["y"], outputs: ["shape"] },
        ],
        inputs: [{ name: "x", dtype: "float32", shape: [1, 4, 1, 1] }],
        outputs: [{ name: "shape", dtype: "int64", shape: [4] }],
        initializers: [],
      },
    });
    try {
      const s = await ort.InferenceSession.create(bytes, { intraOpNumThreads: 1 });
      const out = await s.run({ x: new ort.Tensor("float32", new Float32Array(4), [1, 4, 1, 1]) });
      const block = Number((out["shape"]!.data as BigInt64Array)[1]);
      await s.release();
      return block > 4 && block % 4 === 0 ? block : 0;
    } catch {
      return 0; // no NCHWc kernels in this build or on this CPU
    }
  })();
  return blockProbe;
}

/** A session for the model (cached: the same bytes, output shapes and options give the same session). */
export async function loadGraph(
  bytes: Uint8Array,
  inputs: readonly ValueSpec[],
  outputs: readonly ValueSpec[],
  opts: SessionOptions = {},
): Promise<CompiledGraph> {
  // an uncached session needs no key: skip hashing its bytes (weights included)
  if (opts.cache === false) return openSession(bytes, inputs, outputs, opts, "");
  const key = cacheKey(bytes, outputs, opts);
  const hit = cache.get(key);
  if (hit) return hit;
  const waiting = pending.get(key);
  if (waiting) return waiting;
  const p = openSession(bytes, inputs, outputs, opts, key).then((g) => {
    cache.set(key, g);
    pending.delete(key);
    return g;
  });
  pending.set(key, p);
  try {
    return await p;
  } catch (e) {
    pending.delete(key);
    throw e;
  }
}

async function openSession(
  bytes: Uint8Array,
  inputs: readonly ValueSpec[],
  outputs: readonly ValueSpec[],
  opts: SessionOptions,
  key: string,
): Promise<CompiledGraph> {
  const threads = opts.threads ?? defaultThreads();
  const providers = opts.executionProviders ?? defaultExecutionProviders();
  const onDevice = keptOnDevice(opts, providers);
  for (const name of onDevice) {
    if (!outputs.some((o) => o.name === name))
      throw new Error(`deviceOutputs names "${name}", which is not an output of the graph`);
  }
  try {
    const native = providers.every((p) => p === "cpu") ? await nativeApi() : null;
    const profile = opts.profile ?? defaultProfile();
    if (native) {
      const session = NativeSession.create(native, bytes, {
        threads,
        optimization: opts.optimization ?? "all",
        spin: opts.spin ?? defaultSpin(),
        ...(profile ? { profile } : {}),
        arena: opts.arena ?? defaultArena(),
      });
      return new CompiledGraph(session, inputs, outputs, key, onDevice);
    }
    const session = await ort.InferenceSession.create(bytes, {
      ...(onDevice.size > 0
        ? {
            preferredOutputLocation: Object.fromEntries(
              outputs.map((o) => [o.name, onDevice.has(o.name) ? "gpu-buffer" : "cpu"] as const),
            ),
          }
        : {}),
      intraOpNumThreads: threads,
      interOpNumThreads: 1,
      executionMode: "sequential",
      graphOptimizationLevel: opts.optimization ?? "all",
      executionProviders: [...providers],
      ...(profile ? { enableProfiling: true, profileFilePrefix: profile } : {}),
      enableCpuMemArena: true,
      // Memory patterns pre-plan one block for every intermediate of a run; for a U-Net train step it
      // doubled peak RSS (2.8 GB against 1.5 GB with the arena's own reuse) at the same speed.
      enableMemPattern: false,
      extra: { session: { intra_op: { allow_spinning: (opts.spin ?? defaultSpin()) ? "1" : "0" } } },
    });
    return new CompiledGraph(session, inputs, outputs, key, onDevice);
  } catch (e) {
    const gpu = providers.filter((p) => p !== "cpu");
    const hint =
      gpu.length === 0
        ? ""
        : ` (execution providers ${providers.join(",")}: check the ${gpu.join("/")} setup in README's "GPU" section, or set DIFFUSE_EP=cpu)`;
    throw new Error(`ONNX Runtime could not load the graph: ${(e as Error).message}${hint}`);
  }
}

/**
 * Reads device tensors back to the host: one graph of Identity nodes on the same providers (cached
 * by the tensors' shapes), its outputs on the host.
 */
export async function downloadAll(
  tensors: Readonly<Record<string, DeviceTensor>>,
  opts: SessionOptions = {},
): Promise<Record<string, HostTensor>> {
  const entries = Object.entries(tensors);
  if (entries.length === 0) return {};
  const inputs = entries.map(([, t], i) => ({ name: `i${i}`, dtype: t.dtype, shape: t.shape }));
  const outputs = entries.map(([, t], i) => ({ name: `o${i}`, dtype: t.dtype, shape: t.shape }));
  const bytes = encodeModel({
    opsetVersion: OPSET,
    irVersion: 8,
    producerName: "diffuse",
    graph: {
      name: "download",
      nodes: entries.map((_, i) => ({ opType: "Identity", inputs: [`i${i}`], outputs: [`o${i}`] })),
      inputs,
      outputs,
      initializers: [],
    },
  });
  const g = await loadGraph(bytes, inputs, outputs, { ...opts, deviceOutputs: [] });
  const { host } = await g.runOnDevice(Object.fromEntries(entries.map(([, t], i) => [`i${i}`, t])));
  return Object.fromEntries(entries.map(([name], i) => [name, host[`o${i}`]!]));
}

/** Raw data of a host tensor for a feed (exposed for tests). */
export function dataOf(t: HostTensor): HostData {
  return t.data;
}
