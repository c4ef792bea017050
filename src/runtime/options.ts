/**
 * Session options and their defaults from the environment: DIFFUSE_THREADS (intra-op threads),
 * DIFFUSE_EP (execution providers), DIFFUSE_SPIN (spinning intra-op threads), DIFFUSE_PROFILE (a
 * per-node timing profile of every CPU session, written by ONNX Runtime under that file prefix;
 * summarise it with scripts/profile-summary.ts), DIFFUSE_ARENA (where CPU sessions allocate).
 */
import { availableParallelism } from "node:os";

export type ExecutionProvider = "cpu" | "cuda" | "webgpu";

const PROVIDERS: readonly ExecutionProvider[] = ["cpu", "cuda", "webgpu"];

export interface SessionOptions {
  /** Intra-op threads (default: all cores). */
  threads?: number;
  /**
   * Execution providers in order of preference (default: DIFFUSE_EP, else ["cpu"]). Nodes a provider
   * cannot run fall back to the next one. "webgpu" is bundled with onnxruntime-node (it needs a
   * Vulkan driver on Linux); "cuda" needs ONNX Runtime's CUDA build (README).
   */
  executionProviders?: readonly ExecutionProvider[];
  /** ONNX Runtime graph optimizations (default "all"). */
  optimization?: "disabled" | "basic" | "extended" | "all";
  /**
   * Whether idle intra-op threads busy-wait for work (ONNX Runtime's `session.intra_op.allow_spinning`).
   * Default: true (ONNX Runtime's own default), or DIFFUSE_SPIN=0|1. Spinning steadies a run on an
   * idle machine (U-Net forward at batch 128: 1.20 ± 0.02 s against 1.17–1.79 s without); on a
   * machine shared with other work, spinning threads take cores the other threads need: set 0 there.
   */
  spin?: boolean;
  /**
   * Whether the session joins the process-wide cache (default true). Graphs with embedded weights
   * that will be replaced pass false and dispose their session themselves.
   */
  cache?: boolean;
  /**
   * Outputs to leave in the memory of a WebGPU provider (the first provider): `runOnDevice` returns
   * them as `DeviceTensor`s, which feed a later run without a copy through the host. Ignored where the
   * first provider is not "webgpu".
   */
  deviceOutputs?: readonly string[];
  /**
   * A file name prefix under which ONNX Runtime writes the session's per-node timing profile (JSON):
   * CPU sessions (ONNX Runtime's C API) write it when released or at the latest when the process exits,
   * sessions on other providers (onnxruntime-node) when released. Default: DIFFUSE_PROFILE.
   */
  profile?: string;
  /**
   * Where a CPU session (ONNX Runtime's C API) allocates its tensors. "shared" (default): one arena
   * for the process, grown by exactly what a run asks (ONNX Runtime's kSameAsRequested) and used by
   * every "shared" session — a train step, its preview sampler and its evaluation draw on one pool,
   * whose high-water mark stays with the process. "own": the session's own arena (grown by powers of
   * two), given back when the session is released — for a process that caches and evicts graphs (the
   * studio's sampling worker). The DiT-S train step at batch 64 peaks at 3.6 GiB shared against 4.6
   * GiB own, at the same speed (docs/benchmarks.md). Default: DIFFUSE_ARENA, else `setDefaultArena`'s.
   */
  arena?: Arena;
}

export type Arena = "shared" | "own";

let arenaDefault: Arena = "shared";

/** Sets the arena of sessions whose options name none (a process that releases graphs: "own"). */
export function setDefaultArena(a: Arena): void {
  arenaDefault = a;
}

/** The arena of a session whose options name none: DIFFUSE_ARENA, else the process's default. */
export function defaultArena(): Arena {
  const env = process.env["DIFFUSE_ARENA"];
  if (env === undefined || env.trim() === "") return arenaDefault;
  if (env !== "shared" && env !== "own") throw new Error(`DIFFUSE_ARENA must be shared or own, got "${env}"`);
  return env;
}

/** DIFFUSE_PROFILE: the prefix of sessions' profile files, when set. */
export function defaultProfile(): string | undefined {
  const env = process.env["DIFFUSE_PROFILE"];
  return env === undefined || env.trim() === "" ? undefined : env;
}

export function defaultThreads(): number {
  const env = process.env["DIFFUSE_THREADS"];
  if (env !== undefined) {
    const n = Number(env);
    if (!Number.isInteger(n) || n < 1)
      throw new Error(`DIFFUSE_THREADS must be a positive integer, got "${env}"`);
    return n;
  }
  return availableParallelism();
}

/**
 * The execution providers a session uses when its options name none: DIFFUSE_EP, a comma-separated
 * list in order of preference ("webgpu,cpu"), else ["cpu"]. "cpu" is appended when missing, so any
 * node a GPU provider cannot run still has a home.
 */
export function defaultExecutionProviders(): readonly ExecutionProvider[] {
  const env = process.env["DIFFUSE_EP"];
  if (env === undefined || env.trim() === "") return ["cpu"];
  const names = env.split(",").map((s) => s.trim().toLowerCase());
  for (const n of names) {
    if (!(PROVIDERS as readonly string[]).includes(n))
      throw new Error(
        `DIFFUSE_EP names an unknown execution provider "${n}" (in "${env}"): use a comma-separated list of ${PROVIDERS.join(", ")}`,
      );
  }
  const list = [...new Set(names)] as ExecutionProvider[];
  return list.includes("cpu") ? list : [...list, "cpu"];
}

export function defaultSpin(): boolean {
  const env = process.env["DIFFUSE_SPIN"];
  if (env === undefined) return true;
  if (env !== "0" && env !== "1") throw new Error(`DIFFUSE_SPIN must be 0 or 1, got "${env}"`);
  return env === "1";
}
