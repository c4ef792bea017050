/**
 * The sampling worker's cache, bounded by memory rather than by a count of shapes. A model keeps one
 * compiled graph per input shape, and each graph keeps its weights and ONNX Runtime's working memory
 * (at a large batch and size, gigabytes) for as long as it lives. So the worker loads each model's
 * weights once (a base) and gives every job shape (count, guidance, size) its own copy of the
 * pipeline's models over those same weights, whose graphs are that shape's alone: evicting a shape
 * releases exactly its graphs. Every entry carries its estimated bytes (job-cost.ts); before a job
 * runs, the least recently used shapes (then unused models) are released until the cached total and
 * the new job fit in the budget, and the freed memory is handed back to the system.
 *
 * A job's LoRA files are part of its shape's key: a shape's models carry that job's adapters (loaded
 * into the copy, never into the base), so jobs with other files or scales get their own graphs.
 */

import { loadLoraWeights } from "../models/lora/index.ts";
import { disposePipeline, type LoadedPipeline, loadPipeline } from "../pipelines/pipeline-dir.ts";
import type { TextEncoding } from "../pipelines/text-to-image.ts";
import { releaseFreedMemory } from "../runtime/malloc-trim.ts";
import type { Params } from "../tensor/params.ts";
import type { JobEstimate } from "./job-cost.ts";
import type { SampleSpec } from "./protocol.ts";

/** A model object again, over the same weights (no copy), with graphs of its own. */
function again<T extends { readonly config: object; readonly params: Params }>(m: T): T {
  const cls = m.constructor as unknown as { fromParams(config: object, params: Params): T };
  return cls.fromParams(m.config, m.params);
}

/** A pipeline's models again over the same weights: a shape's own graphs. */
function shapeCopy(p: LoadedPipeline): LoadedPipeline {
  return {
    ...p,
    denoiser: again(p.denoiser),
    ...(p.vae ? { vae: again(p.vae) } : {}),
    ...(p.text ? { text: textCopy(p.text) } : {}),
  };
}

/** A pipeline's text encoders again (an SD3 pipeline's layout and second encoder kept). */
function textCopy(t: TextEncoding): TextEncoding {
  const sd3 = t.sd3;
  return {
    tokenizer: t.tokenizer,
    textEncoder: again(t.textEncoder),
    ...(sd3
      ? {
          sd3: {
            ...sd3,
            ...(sd3.second
              ? { second: { tokenizer: sd3.second.tokenizer, textEncoder: again(sd3.second.textEncoder) } }
              : {}),
          },
        }
      : {}),
  };
}

interface Base {
  pipe: Promise<LoadedPipeline>;
  bytes: number;
}

interface Entry {
  base: string;
  pipe: LoadedPipeline;
  bytes: number;
}

export interface CacheStats {
  /** Estimated bytes held: compiled graphs and loaded weights. */
  bytes: number;
  shapes: number;
  models: number;
}

export class GraphCache {
  private readonly bases = new Map<string, Base>();
  /** In order of use, least recent first. */
  private readonly entries = new Map<string, Entry>();

  constructor(readonly budgetBytes: number) {}

  get stats(): CacheStats {
    return { bytes: this.held(), shapes: this.entries.size, models: this.bases.size };
  }

  /**
   * The pipeline to run a job on: its shape's cached one, or a new one after the least recently used
   * shapes and models were released to make room for the job's estimate.
   */
  async pipelineFor(spec: SampleSpec, estimate: JobEstimate | null): Promise<LoadedPipeline> {
    const baseKey = `${spec.dir}\0${spec.stamp}`;
    const guided = spec.guidance !== 0 && spec.guidance !== 1;
    const loras = spec.loras.map((l) => `${l.path}:${l.stamp}:${l.scale}`).join("|");
    const key = `${baseKey}\0${spec.count}\0${guided}\0${spec.size}\0${loras}`;
    // a training run's re-exported model replaces its older version
    for (const k of [...this.bases.keys()])
      if (k !== baseKey && k.startsWith(`${spec.dir}\0`)) this.dropBase(k);
    const hit = this.entries.get(key);
    if (hit) {
      this.entries.delete(key);
      this.entries.set(key, hit);
      return hit.pipe;
    }
    const need = (estimate?.graphBytes ?? 0) + (this.bases.has(baseKey) ? 0 : (estimate?.modelBytes ?? 0));
    if (await this.makeRoom(need, baseKey)) await releaseFreedMemory();
    let base = this.bases.get(baseKey);
    if (!base) {
      base = { pipe: loadPipeline(spec.dir), bytes: estimate?.modelBytes ?? 0 };
      base.pipe.catch(() => this.bases.delete(baseKey));
      this.bases.set(baseKey, base);
    }
    const pipe = shapeCopy(await base.pipe);
    try {
      for (const l of spec.loras)
        await loadLoraWeights(pipe, l.path, { scale: l.scale, adapterName: l.name });
    } catch (e) {
      disposePipeline(pipe);
      throw new Error(`LoRA: ${(e as Error).message}`);
    }
    this.entries.set(key, { base: baseKey, pipe, bytes: estimate?.graphBytes ?? 0 });
    return pipe;
  }

  /** Releases everything. */
  clear(): void {
    for (const k of [...this.bases.keys()]) this.dropBase(k);
  }

  private held(): number {
    let n = 0;
    for (const e of this.entries.values()) n += e.bytes;
    for (const b of this.bases.values()) n += b.bytes;
    return n;
  }

  /** Releases least recently used shapes, then models other than `keep`, until `need` more bytes fit. */
  private async makeRoom(need: number, keep: string): Promise<boolean> {
    let freed = false;
    while (this.held() + need > this.budgetBytes) {
      const lru = this.entries.keys().next();
      if (!lru.done) {
        const e = this.entries.get(lru.value)!;
        this.entries.delete(lru.value);
        disposePipeline(e.pipe);
        freed = true;
        continue;
      }
      const idle = [...this.bases.keys()].find((k) => k !== keep);
      if (idle === undefined) break;
      this.dropBase(idle);
      freed = true;
    }
    // sessions are released once their compile promises settle: let that happen first
    if (freed) await new Promise<void>((r) => setImmediate(r));
    return freed;
  }

  private dropBase(key: string): void {
    for (const [k, e] of [...this.entries]) {
      if (e.base !== key) continue;
      this.entries.delete(k);
      disposePipeline(e.pipe);
    }
    this.bases.get(key)?.pipe.then(disposePipeline, () => {});
    this.bases.delete(key);
  }
}
