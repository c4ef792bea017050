/**
 * The reflow pairs of a run (train/reflow.ts), cached in its folder so that a resumed run trains on
 * exactly the pairs it started with and never pays for them twice:
 *
 *   pairs/manifest.json               what made them: the teacher (a hash of its weights, its model and
 *                                     scheduler configs), N steps, guidance ω, the seed, the count,
 *                                     the chunk size, the pair shape and the clamp range
 *   pairs/chunk-000000.safetensors    z, x [n, C, H, W] float32 and labels [n] int64 of pairs
 *                                     k·chunk … (k+1)·chunk − 1 (the last chunk may be shorter)
 *
 * Every file is written atomically (temporary name, fsync, rename). The teacher makes the pairs chunk
 * by chunk; a run stopped or killed while making them keeps the chunks already written and makes only
 * the missing ones when run again. A chunk is always made as the same batch (its pair range), so the
 * same settings give bit-identical pairs. A cache whose manifest differs from what the config asks for
 * is refused, naming what differs (the run's checkpoint was trained on those pairs), unless the run
 * starts over (`regenerate`: --overwrite), which deletes it and makes the pairs again — keeping the
 * chunks when only the count changed (chunk k does not depend on it).
 */
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { writeJsonAtomic } from "../io/atomic.ts";
import { readSafetensors, writeSafetensors } from "../io/safetensors.ts";
import type { Params } from "../tensor/params.ts";
import type { PairSet, ReflowPairs } from "./reflow.ts";

/** Pairs per chunk: one batch of the teacher, one file. */
export const PAIR_CHUNK = 100;

export interface PairsManifest {
  format: 1;
  /** The teacher as the config names it (shown; not compared: a moved folder is the same teacher). */
  teacher: string;
  /** sha256 of the teacher's weights (names and bytes), first 16 hex digits. */
  teacherWeights: string;
  teacherConfig: Record<string, unknown>;
  teacherScheduler: Record<string, unknown>;
  teacherSteps: number;
  guidance: number;
  seed: number;
  count: number;
  chunk: number;
  shape: [number, number, number];
  numClasses: number | null;
  range: [number, number];
}

/** Where pair making stands, after each chunk. */
export interface PairsProgress {
  /** Pairs ready (read from the cache or made). */
  done: number;
  total: number;
  /** Of them, made in this session. */
  made: number;
  /** Seconds spent making them in this session. */
  seconds: number;
}

/** A short hash of a parameter map (names sorted, float32 bytes). */
export function weightsHash(params: Params): string {
  const h = createHash("sha256");
  for (const name of [...params.keys()].sort()) {
    const t = params.get(name)!;
    h.update(`${name}[${t.shape.join(",")}]`);
    h.update(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  }
  return h.digest("hex").slice(0, 16);
}

/** The config field a manifest entry comes from, for error messages. */
const FIELD: Record<keyof PairsManifest, string> = {
  format: "the pair file format",
  teacher: "teacher",
  teacherWeights: "the teacher's weights",
  teacherConfig: "the teacher's model config",
  teacherScheduler: "the teacher's scheduler config",
  teacherSteps: "reflow.teacher_steps",
  guidance: "reflow.guidance",
  seed: "reflow.seed",
  count: "reflow.pairs",
  chunk: "the chunk size",
  shape: "data.size (the pair shape)",
  numClasses: "the teacher's class count",
  range: "the teacher's image range",
};

/** Fields too long to show: named only. */
const WHOLE = new Set<keyof PairsManifest>(["teacherWeights", "teacherConfig", "teacherScheduler"]);

/** The fields in which two manifests differ (the teacher's name aside), as "field: had → asked". */
export function manifestDifferences(had: Partial<PairsManifest>, want: PairsManifest): string[] {
  const out: string[] = [];
  for (const k of Object.keys(FIELD) as (keyof PairsManifest)[]) {
    if (k === "teacher") continue;
    const a = JSON.stringify(had[k]);
    const b = JSON.stringify(want[k]);
    if (a !== b) out.push(WHOLE.has(k) ? FIELD[k] : `${FIELD[k]} ${a} → ${b}`);
  }
  return out;
}

const chunkPath = (dir: string, k: number) => join(dir, `chunk-${String(k).padStart(6, "0")}.safetensors`);

/** A chunk file's pairs, or null when it is missing or not a complete chunk of this manifest. */
function readChunk(path: string, m: PairsManifest, n: number): ReflowPairs | null {
  if (!existsSync(path)) return null;
  try {
    const t = readSafetensors(path).tensors;
    const z = t.get("z");
    const x = t.get("x");
    const labels = t.get("labels") ?? null;
    const want = [n, ...m.shape].join();
    if (z?.dtype !== "float32" || x?.dtype !== "float32") return null;
    if (z.shape.join() !== want || x.shape.join() !== want) return null;
    if ((labels === null) !== (m.numClasses === null)) return null;
    if (labels && (labels.dtype !== "int64" || labels.shape.join() !== String(n))) return null;
    return {
      z: z as ReflowPairs["z"],
      x: x as ReflowPairs["x"],
      labels: labels as ReflowPairs["labels"],
    };
  } catch {
    return null; // unreadable: made again (the same settings make the same pairs)
  }
}

export interface PairCacheOptions {
  /** Delete a cache made with other settings and make the pairs again (a run started over). */
  regenerate?: boolean;
  onProgress?: (p: PairsProgress) => void;
  /** Stops after the current chunk; the chunks made so far stay. */
  signal?: AbortSignal;
}

/**
 * The run's pairs: read from `dir` where its manifest matches, the missing chunks made by `make`
 * (pairs from..to−1) and written as they come.
 */
export async function loadOrMakePairs(
  dir: string,
  manifest: PairsManifest,
  make: (from: number, to: number) => Promise<ReflowPairs>,
  opts: PairCacheOptions = {},
): Promise<PairSet> {
  const manifestPath = join(dir, "manifest.json");
  if (existsSync(manifestPath)) {
    let had: Partial<PairsManifest> = {};
    try {
      had = JSON.parse(readFileSync(manifestPath, "utf8")) as Partial<PairsManifest>;
    } catch {
      had = {}; // damaged: differs in every field
    }
    const diff = manifestDifferences(had, manifest);
    if (diff.length > 0) {
      if (!opts.regenerate)
        throw new Error(
          `the reflow pairs in ${dir} were made with other settings (${diff.join("; ")}); resume with the settings they were made with, or start over with --overwrite (which makes the pairs again) or a new --out folder`,
        );
      if (diff.length === 1 && had.count !== manifest.count) {
        // only the count differs: chunk k is the same whatever the count (a shorter last chunk is
        // made again); drop the chunks past the new end
        for (const f of readdirSync(dir))
          if (/^chunk-\d+\.safetensors$/.test(f) && Number(f.slice(6, 12)) * manifest.chunk >= manifest.count)
            rmSync(join(dir, f), { force: true });
      } else rmSync(dir, { recursive: true, force: true });
    }
  }
  mkdirSync(dir, { recursive: true });
  writeJsonAtomic(manifestPath, manifest);

  const [c, h, w] = manifest.shape;
  const per = c * h * w;
  const set: PairSet = {
    count: manifest.count,
    shape: manifest.shape,
    z: new Float32Array(manifest.count * per),
    x: new Float32Array(manifest.count * per),
    labels: manifest.numClasses === null ? null : new Int32Array(manifest.count),
  };
  let done = 0;
  let made = 0;
  let seconds = 0;
  for (let from = 0, k = 0; from < manifest.count; from += manifest.chunk, k++) {
    const to = Math.min(manifest.count, from + manifest.chunk);
    const path = chunkPath(dir, k);
    let pairs = readChunk(path, manifest, to - from);
    if (!pairs) {
      if (opts.signal?.aborted)
        throw new Error(
          `stopped while the teacher made the reflow pairs: ${done} of ${manifest.count} are saved in ${dir}; run the same command to go on`,
        );
      const t0 = performance.now();
      pairs = await make(from, to);
      const tensors = { z: pairs.z, x: pairs.x, ...(pairs.labels ? { labels: pairs.labels } : {}) };
      writeSafetensors(path, tensors);
      seconds += (performance.now() - t0) / 1000;
      made += to - from;
    }
    set.z.set(pairs.z.data, from * per);
    set.x.set(pairs.x.data, from * per);
    if (set.labels && pairs.labels)
      for (let i = 0; i < to - from; i++) set.labels[from + i] = Number(pairs.labels.data[i]!);
    done = to;
    opts.onProgress?.({ done, total: manifest.count, made, seconds });
  }
  return set;
}
