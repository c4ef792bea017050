/**
 * The session's gallery: finished generations with their parameters, final grid (PNG, parameters
 * in its text chunk) and trajectory (animated PNG), kept in memory, newest first. Bounded by count
 * and bytes: the oldest entries go first.
 */
import type { GenerateParams } from "./validate.ts";

export interface GalleryEntry {
  id: string;
  params: GenerateParams;
  created: number;
  ms: number;
  png: Uint8Array;
  apng: Uint8Array;
}

export class Gallery {
  private readonly entries: GalleryEntry[] = [];
  private seq = 0;

  constructor(
    private readonly maxEntries = 100,
    private readonly maxBytes = 256 * 1024 * 1024,
  ) {}

  add(params: GenerateParams, png: Uint8Array, apng: Uint8Array, ms: number): GalleryEntry {
    const entry: GalleryEntry = { id: String(++this.seq), params, created: Date.now(), ms, png, apng };
    this.entries.unshift(entry);
    let bytes = this.entries.reduce((a, e) => a + e.png.byteLength + e.apng.byteLength, 0);
    while (this.entries.length > 1 && (this.entries.length > this.maxEntries || bytes > this.maxBytes)) {
      const gone = this.entries.pop()!;
      bytes -= gone.png.byteLength + gone.apng.byteLength;
    }
    return entry;
  }

  get(id: string): GalleryEntry | undefined {
    return this.entries.find((e) => e.id === id);
  }

  /** Entries as the API lists them (no image bytes: those have their own URLs). */
  list(): ReturnType<typeof describe>[] {
    return this.entries.map(describe);
  }
}

export function describe(e: GalleryEntry) {
  return {
    id: e.id,
    params: e.params,
    created: e.created,
    ms: Math.round(e.ms),
    image: `/api/gallery/${e.id}/image.png`,
    animation: `/api/gallery/${e.id}/trajectory.png`,
  };
}
