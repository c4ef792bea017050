/**
 * Loading ONNX Runtime's C API (capi.ts): the library file onnxruntime-node ships, its `OrtApi` function
 * table by slot, the process's environment, and the shared CPU arena "shared" sessions allocate from.
 */
import { readdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

/** An opaque native pointer (koffi's external object). */
export type Ptr = unknown;
/** A koffi function. */
type Fn = (...args: unknown[]) => unknown;

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

export interface Native {
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
export function registerSharedArena(n: Native): void {
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
export function check(n: Native, status: unknown): void {
  if (!status) return;
  const message = n.api.GetErrorMessage(status) as string;
  n.api.ReleaseStatus(status);
  throw new Error(message);
}

/** Calls `f` with a one-element out-parameter, checks its status and returns what it wrote. */
export function out<T = Ptr>(n: Native, f: (o: unknown[]) => unknown): T {
  const o: unknown[] = [null];
  check(n, f(o));
  return o[0] as T;
}
