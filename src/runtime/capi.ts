/**
 * ONNX Runtime's C API, called through koffi (a foreign-function interface), for CPU sessions.
 *
 * onnxruntime-node's binding copies every output of a run into a fresh, zero-filled ArrayBuffer, even
 * an output the caller pre-allocated: 0.8–3 ms a run for the 2–8 MiB a batch-64 U-Net convolution
 * returns, on a 2-core machine (docs/benchmarks.md). Through the C API, ONNX Runtime writes each output straight into
 * an ArrayBuffer allocated here (uninitialised: every element is written by the run). It is the same
 * library file that onnxruntime-node ships and loads, so the same kernels, threads and results.
 *
 * `nativeApi()` returns null where koffi or the library cannot be loaded (or DIFFUSE_CAPI=0): sessions
 * then go through onnxruntime-node as before. Only `session.ts` uses this module.
 */
import type { DType, HostData } from "../tensor/host.ts";
import { check, type Native, out, type Ptr, registerSharedArena } from "./capi-api.ts";

export { capiEnabled, nativeApi } from "./capi-api.ts";

/** ONNX element types (onnx.TensorProto.DataType) of the dtypes the engine uses. */
const ELEMENT_TYPE: Readonly<Record<DType, number>> = { float32: 1, int32: 6, int64: 7, bool: 9 };
const BYTES: Readonly<Record<DType, number>> = { float32: 4, int32: 4, int64: 8, bool: 1 };

export interface NativeSessionOptions {
  threads: number;
  optimization: "disabled" | "basic" | "extended" | "all";
  spin: boolean;
  /** Where ONNX Runtime writes a per-node timing profile (a file name prefix); none when absent. */
  profile?: string;
  /** The process's shared arena or the session's own (SessionOptions.arena). */
  arena: "shared" | "own";
}

const OPT_LEVEL = { disabled: 0, basic: 1, extended: 2, all: 99 } as const;

interface OutputInfo {
  name: string;
  dtype: DType;
  /** The session's output shape (null where a dimension is symbolic). */
  shape: BigInt64Array | null;
  elements: number;
}

const DTYPE_OF = new Map<number, DType>(Object.entries(ELEMENT_TYPE).map(([k, v]) => [v, k as DType]));

/** The typed array of each dtype's host data. */
const ARRAY = { float32: Float32Array, int32: Int32Array, int64: BigInt64Array, bool: Uint8Array } as const;

function typedArray(dtype: DType, buffer: ArrayBuffer, byteOffset: number, length: number): HostData {
  switch (dtype) {
    case "float32":
      return new Float32Array(buffer, byteOffset, length);
    case "int32":
      return new Int32Array(buffer, byteOffset, length);
    case "int64":
      return new BigInt64Array(buffer, byteOffset, length);
    case "bool":
      return new Uint8Array(buffer, byteOffset, length);
  }
}

/** Memory for an output the run will write in full: uninitialised, owned by JavaScript. */
function allocate(dtype: DType, elements: number): HostData {
  const bytes = Buffer.allocUnsafeSlow(Math.max(1, elements * BYTES[dtype]));
  return typedArray(dtype, bytes.buffer as ArrayBuffer, bytes.byteOffset, elements);
}

export interface NativeOutput {
  data: HostData;
  /** The session's output shape. */
  dims: number[];
}

export interface NativeFeed {
  dtype: DType;
  shape: readonly number[];
  data: HostData;
}

const released = new FinalizationRegistry<{ n: Native; ptr: Ptr }>(({ n, ptr }) => n.api.ReleaseSession(ptr));

/**
 * Sessions opened with a profile: it is written when they are released, or at the latest when the
 * process exits. (The set holds them: a profiled session left undisposed lives until exit — profiling
 * is for measuring, not for long-running processes.)
 */
const profiled = new Set<NativeSession>();
process.once("exit", () => {
  for (const s of [...profiled]) {
    const file = s.endProfiling();
    if (file) process.stderr.write(`ONNX Runtime profile: ${file}\n`);
  }
});

/** An ONNX Runtime session opened through the C API (CPU execution provider). */
export class NativeSession {
  private ptr: Ptr;
  private readonly outputInfo: ReadonlyMap<string, OutputInfo>;

  private constructor(
    private readonly n: Native,
    ptr: Ptr,
  ) {
    this.ptr = ptr;
    this.outputInfo = new Map(this.readOutputs().map((o) => [o.name, o]));
    released.register(this, { n, ptr }, this);
  }

  /** Opens a session for the model bytes; throws ONNX Runtime's message where it cannot. */
  static create(n: Native, bytes: Uint8Array, opts: NativeSessionOptions): NativeSession {
    const { api } = n;
    const so = out(n, (o) => api.CreateSessionOptions(o));
    try {
      check(n, api.SetIntraOpNumThreads(so, opts.threads));
      check(n, api.SetInterOpNumThreads(so, 1));
      check(n, api.SetSessionExecutionMode(so, 0)); // ORT_SEQUENTIAL
      check(n, api.SetSessionGraphOptimizationLevel(so, OPT_LEVEL[opts.optimization]));
      check(n, api.EnableCpuMemArena(so));
      // as for onnxruntime-node's sessions (session.ts): memory patterns double a train step's peak RSS
      check(n, api.DisableMemPattern(so));
      check(n, api.AddSessionConfigEntry(so, "session.intra_op.allow_spinning", opts.spin ? "1" : "0"));
      if (opts.arena === "shared") {
        registerSharedArena(n);
        check(n, api.AddSessionConfigEntry(so, "session.use_env_allocators", "1"));
      }
      if (opts.profile) check(n, api.EnableProfiling(so, opts.profile));
      const ptr = out(n, (o) => api.CreateSessionFromArray(n.env, bytes, bytes.byteLength, so, o));
      const session = new NativeSession(n, ptr);
      if (opts.profile) profiled.add(session);
      return session;
    } finally {
      api.ReleaseSessionOptions(so);
    }
  }

  private readOutputs(): OutputInfo[] {
    const { api, koffi } = this.n;
    const count = Number(out<number | bigint>(this.n, (o) => api.SessionGetOutputCount(this.ptr, o)));
    const infos: OutputInfo[] = [];
    for (let i = 0; i < count; i++) {
      const namePtr = out(this.n, (o) => api.SessionGetOutputName(this.ptr, i, this.n.allocator, o));
      const name = koffi.decode(namePtr, "char", -1) as string;
      check(this.n, api.AllocatorFree(this.n.allocator, namePtr));
      const typeInfo = out(this.n, (o) => api.SessionGetOutputTypeInfo(this.ptr, i, o));
      try {
        // owned by typeInfo: not released on its own
        const tensorInfo = out(this.n, (o) => api.CastTypeInfoToTensorInfo(typeInfo, o));
        if (!tensorInfo) throw new Error(`output "${name}" is not a tensor`);
        const type = out<number>(this.n, (o) => api.GetTensorElementType(tensorInfo, o));
        const dtype = DTYPE_OF.get(type);
        if (!dtype) throw new Error(`output "${name}" has an unsupported element type (${type})`);
        const rank = Number(out<number | bigint>(this.n, (o) => api.GetDimensionsCount(tensorInfo, o)));
        const dims = new BigInt64Array(rank);
        check(this.n, api.GetDimensions(tensorInfo, dims, rank));
        const fixed = dims.every((d) => d >= 0n);
        infos.push({
          name,
          dtype,
          shape: fixed ? dims : null,
          elements: fixed ? dims.reduce((a, d) => a * Number(d), 1) : -1,
        });
      } finally {
        api.ReleaseTypeInfo(typeInfo);
      }
    }
    return infos;
  }

  /**
   * Runs the session on host feeds; returns the named outputs' data (shaped as the session's
   * outputs). Outputs of a fixed shape are written by ONNX Runtime into memory allocated here, or
   * into the caller's buffer given for them in `into` (of the output's dtype and size: else ignored).
   */
  run(
    feeds: ReadonlyMap<string, NativeFeed>,
    outputNames: readonly string[],
    into?: ReadonlyMap<string, HostData>,
  ): Record<string, NativeOutput> {
    if (!this.ptr) throw new Error("run on a released session");
    const { api } = this.n;
    const inputNames = [...feeds.keys()];
    const inputs: Ptr[] = [];
    const outputs: Ptr[] = [];
    const result: Record<string, NativeOutput> = {};
    try {
      for (const feed of feeds.values()) {
        const shape = BigInt64Array.from(feed.shape, BigInt);
        inputs.push(
          out(this.n, (o) =>
            api.CreateTensorWithDataAsOrtValue(
              this.n.cpu,
              feed.data,
              feed.data.byteLength,
              shape,
              shape.length,
              ELEMENT_TYPE[feed.dtype],
              o,
            ),
          ),
        );
      }
      for (const name of outputNames) {
        const info = this.outputInfo.get(name);
        if (!info) throw new Error(`the graph has no output "${name}"`);
        if (!info.shape) {
          outputs.push(null); // symbolic shape: ONNX Runtime allocates it, copied out below
          continue;
        }
        const given = into?.get(name);
        const data =
          given && given.length === info.elements && given instanceof ARRAY[info.dtype]
            ? given
            : allocate(info.dtype, info.elements);
        result[name] = { data, dims: Array.from(info.shape, Number) };
        outputs.push(
          out(this.n, (o) =>
            api.CreateTensorWithDataAsOrtValue(
              this.n.cpu,
              data,
              data.byteLength,
              info.shape,
              info.shape!.length,
              ELEMENT_TYPE[info.dtype],
              o,
            ),
          ),
        );
      }
      check(
        this.n,
        api.Run(this.ptr, null, inputNames, inputs, inputs.length, outputNames, outputNames.length, outputs),
      );
      outputNames.forEach((name, i) => {
        if (!result[name]) result[name] = this.copyOut(name, outputs[i]);
      });
      return result;
    } finally {
      for (const v of inputs) if (v) api.ReleaseValue(v);
      for (const v of outputs) if (v) api.ReleaseValue(v);
    }
  }

  /** Copies an output ONNX Runtime allocated itself (a symbolic shape) into JavaScript memory. */
  private copyOut(name: string, value: Ptr): NativeOutput {
    const { api, koffi } = this.n;
    const dtype = this.outputInfo.get(name)!.dtype;
    const tensorInfo = out(this.n, (o) => api.GetTensorTypeAndShape(value, o));
    let dims: BigInt64Array;
    try {
      const rank = Number(out<number | bigint>(this.n, (o) => api.GetDimensionsCount(tensorInfo, o)));
      dims = new BigInt64Array(rank);
      check(this.n, api.GetDimensions(tensorInfo, dims, rank));
    } finally {
      api.ReleaseTensorTypeAndShapeInfo(tensorInfo);
    }
    const elements = dims.reduce((a, d) => a * Number(d), 1);
    const data = allocate(dtype, elements);
    if (elements > 0) {
      const src = out(this.n, (o) => api.GetTensorMutableData(value, o));
      new Uint8Array(data.buffer, data.byteOffset, data.byteLength).set(
        new Uint8Array(koffi.view(src, data.byteLength)),
      );
    }
    return { data, dims: Array.from(dims, Number) };
  }

  /** Ends a profiled session's profile (ONNX Runtime writes its JSON file); returns the file name. */
  endProfiling(): string | null {
    if (!this.ptr || !profiled.delete(this)) return null;
    const file = out(this.n, (o) => this.n.api.SessionEndProfiling(this.ptr, this.n.allocator, o));
    const name = this.n.koffi.decode(file, "char", -1) as string;
    check(this.n, this.n.api.AllocatorFree(this.n.allocator, file));
    return name;
  }

  release(): void {
    if (!this.ptr) return;
    released.unregister(this);
    try {
      this.endProfiling();
    } finally {
      this.n.api.ReleaseSession(this.ptr);
      this.ptr = null;
    }
  }
}
