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
import { readdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import type { DType, HostData } from "../tensor/host.ts";

/** An opaque native pointer (koffi's external object). */
type Ptr = unknown;
/** A koffi function. */
type Fn = (...args: unknown[]) => unknown;

/** ONNX element types (onnx.TensorProto.DataType) of the dtypes the engine uses. */
const ELEMENT_TYPE: Readonly<Record<DType, number>> = { float32: 1, int32: 6, int64: 7, bool: 9 };
const BYTES: Readonly<Record<DType, number>> = { float32: 4, int32: 4, int64: 8, bool: 1 };

/** Positions of the functions in ONNX Runtime's `OrtApi` table (append-only since version 1). */
const SLOTS = {
  GetErrorMessage: [2, "const char *GetErrorMessage(void *status)"],
  CreateEnv: [3, "void *CreateEnv(int level, const char *logid, _Out_ void **env)"],
  CreateSessionFromArray: [
    8,
    "void *CreateSessionFromArray(void *env, const void *data, size_t length, void *options, _Out_ void **session)",
  ],
  Run: [
    9,
    "void *Run(void *session, void *runOptions, const char **inputNames, void **inputs, size_t inputCount, const char **outputNames, size_t outputCount, _Inout_ void **outputs)",
  ],
  CreateSessionOptions: [10, "void *CreateSessionOptions(_Out_ void **options)"],
  SetSessionExecutionMode: [13, "void *SetSessionExecutionMode(void *options, int mode)"],
  EnableProfiling: [14, "void *EnableProfiling(void *options, const char *prefix)"],
  DisableMemPattern: [17, "void *DisableMemPattern(void *options)"],
  EnableCpuMemArena: [18, "void *EnableCpuMemArena(void *options)"],
  SetSessionGraphOptimizationLevel: [23, "void *SetSessionGraphOptimizationLevel(void *options, int level)"],
  SetIntraOpNumThreads: [24, "void *SetIntraOpNumThreads(void *options, int threads)"],
  SetInterOpNumThreads: [25, "void *SetInterOpNumThreads(void *options, int threads)"],
  SessionGetOutputCount: [31, "void *SessionGetOutputCount(void *session, _Out_ size_t *count)"],
  SessionGetOutputTypeInfo: [
    34,
    "void *SessionGetOutputTypeInfo(void *session, size_t index, _Out_ void **info)",
  ],
  SessionGetOutputName: [
    37,
    "void *SessionGetOutputName(void *session, size_t index, void *allocator, _Out_ void **name)",
  ],
  CreateTensorWithDataAsOrtValue: [
    49,
    "void *CreateTensorWithDataAsOrtValue(void *info, void *data, size_t length, const int64_t *shape, size_t rank, int type, _Out_ void **value)",
  ],
  GetTensorMutableData: [51, "void *GetTensorMutableData(void *value, _Out_ void **data)"],
  CastTypeInfoToTensorInfo: [55, "void *CastTypeInfoToTensorInfo(void *typeInfo, _Out_ void **tensorInfo)"],
  GetTensorElementType: [60, "void *GetTensorElementType(void *tensorInfo, _Out_ int *type)"],
  GetDimensionsCount: [61, "void *GetDimensionsCount(void *tensorInfo, _Out_ size_t *count)"],
  GetDimensions: [62, "void *GetDimensions(void *tensorInfo, _Out_ int64_t *dims, size_t count)"],
  GetTensorTypeAndShape: [65, "void *GetTensorTypeAndShape(void *value, _Out_ void **tensorInfo)"],
  CreateCpuMemoryInfo: [69, "void *CreateCpuMemoryInfo(int allocatorType, int memType, _Out_ void **info)"],
  AllocatorFree: [76, "void *AllocatorFree(void *allocator, void *p)"],
  GetAllocatorWithDefaultOptions: [78, "void *GetAllocatorWithDefaultOptions(_Out_ void **allocator)"],
  ReleaseStatus: [93, "void ReleaseStatus(void *status)"],
  ReleaseMemoryInfo: [94, "void ReleaseMemoryInfo(void *info)"],
  ReleaseSession: [95, "void ReleaseSession(void *session)"],
  ReleaseValue: [96, "void ReleaseValue(void *value)"],
  ReleaseTypeInfo: [98, "void ReleaseTypeInfo(void *typeInfo)"],
  ReleaseTensorTypeAndShapeInfo: [99, "void ReleaseTensorTypeAndShapeInfo(void *tensorInfo)"],
  ReleaseSessionOptions: [100, "void ReleaseSessionOptions(void *options)"],
  SessionEndProfiling: [110, "void *SessionEndProfiling(void *session, void *allocator, _Out_ void **file)"],
  AddSessionConfigEntry: [
    130,
    "void *AddSessionConfigEntry(void *options, const char *key, const char *value)",
  ],
  CreateAndRegisterAllocator: [
    144,
    "void *CreateAndRegisterAllocator(void *env, void *info, void *arenaCfg)",
  ],
  ReleaseArenaCfg: [157, "void ReleaseArenaCfg(void *cfg)"],
  CreateArenaCfgV2: [
    164,
    "void *CreateArenaCfgV2(const char **keys, const size_t *values, size_t count, _Out_ void **cfg)",
  ],
} as const;

type Api = { readonly [K in keyof typeof SLOTS]: Fn };

interface Native {
  api: Api;
  koffi: typeof import("koffi").default;
  env: Ptr;
  /** CPU memory info for tensors over memory allocated here. */
  cpu: Ptr;
  allocator: Ptr;
  /** Whether the shared CPU arena is registered with `env` (registerSharedArena). */
  sharedArena: boolean;
}

/** The API version asked of OrtGetApiBase: every slot above exists since version 8. */
const API_VERSION = 8;

let loaded: Promise<Native | null> | undefined;

/** The library file onnxruntime-node loads, in its package's bin folder for this platform. */
function libraryPath(): string | null {
  const require = createRequire(import.meta.url);
  const pkg = dirname(require.resolve("onnxruntime-node/package.json"));
  const binDir = join(pkg, "bin");
  for (const napi of readdirSync(binDir)) {
    const dir = join(binDir, napi, process.platform, process.arch);
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      continue;
    }
    const lib = names.find((n) => /^(lib)?onnxruntime(\.so\.\d+|(\.\d+)*\.dylib|\.dll)$/.test(n));
    if (lib) return join(dir, lib);
  }
  return null;
}

/** Whether DIFFUSE_CAPI lets sessions use the C API (default yes; 0 = onnxruntime-node's binding). */
export function capiEnabled(): boolean {
  const env = process.env["DIFFUSE_CAPI"];
  if (env === undefined) return true;
  if (env !== "0" && env !== "1") throw new Error(`DIFFUSE_CAPI must be 0 or 1, got "${env}"`);
  return env === "1";
}

/** ONNX Runtime's C API, or null where it cannot be used here (see the module comment). */
export function nativeApi(): Promise<Native | null> {
  if (!capiEnabled()) return Promise.resolve(null);
  loaded ??= load().catch(() => null);
  return loaded;
}

async function load(): Promise<Native | null> {
  const path = libraryPath();
  if (!path) return null;
  const koffi = (await import("koffi")).default;
  const lib = koffi.load(path);
  const base = lib.func("void *OrtGetApiBase()")() as Ptr;
  if (!base) return null;
  const [getApi] = koffi.decode(base, "void *", 2) as Ptr[];
  const table = koffi.call(getApi, koffi.proto("void *OrtGetApi(uint32_t version)"), API_VERSION) as Ptr;
  if (!table) return null;
  const slots = koffi.decode(table, "void *", Math.max(...Object.values(SLOTS).map(([i]) => i)) + 1) as Ptr[];
  const api = {} as Record<string, Fn>;
  for (const [name, [slot, signature]] of Object.entries(SLOTS)) {
    api[name] = koffi.decode(slots[slot], koffi.proto(signature)) as Fn;
  }
  const native: Native = {
    api: api as Api,
    koffi,
    env: null,
    cpu: null,
    allocator: null,
    sharedArena: false,
  };
  // ORT_LOGGING_LEVEL_WARNING, as onnxruntime-node; the environment is one per process
  native.env = out(native, (o) => native.api.CreateEnv(2, "diffuse", o));
  // OrtDeviceAllocator, OrtMemTypeDefault: plain CPU memory
  native.cpu = out(native, (o) => native.api.CreateCpuMemoryInfo(0, 0, o));
  native.allocator = out(native, (o) => native.api.GetAllocatorWithDefaultOptions(o));
  return native;
}

/**
 * Registers the process-wide CPU arena that "shared" sessions allocate from (SessionOptions.arena):
 * grown by exactly what is asked (arena_extend_strategy 1, kSameAsRequested) rather than in powers
 * of two. Once per process: the environment is the process's, so a worker thread that loads the API
 * again finds it registered.
 */
function registerSharedArena(n: Native): void {
  if (n.sharedArena) return;
  const cfg = out(n, (o) => n.api.CreateArenaCfgV2(["arena_extend_strategy"], BigUint64Array.of(1n), 1, o));
  // OrtArenaAllocator, OrtMemTypeDefault: the memory info of ONNX Runtime's CPU arena
  const info = out(n, (o) => n.api.CreateCpuMemoryInfo(1, 0, o));
  try {
    check(n, n.api.CreateAndRegisterAllocator(n.env, info, cfg));
  } catch (e) {
    if (!/already been registered/.test((e as Error).message)) throw e;
  } finally {
    n.api.ReleaseMemoryInfo(info);
    n.api.ReleaseArenaCfg(cfg);
  }
  n.sharedArena = true;
}

/** Throws ONNX Runtime's message for a failed call (a non-null status), releasing the status. */
function check(n: Native, status: unknown): void {
  if (!status) return;
  const message = n.api.GetErrorMessage(status) as string;
  n.api.ReleaseStatus(status);
  throw new Error(message);
}

/** Calls `f` with a one-element out-parameter, checks its status and returns what it wrote. */
function out<T = Ptr>(n: Native, f: (o: unknown[]) => unknown): T {
  const o: unknown[] = [null];
  check(n, f(o));
  return o[0] as T;
}

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
