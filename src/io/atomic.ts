/**
 * Crash-safe file writes.
 *
 * A file is written to a temporary name in the same directory, flushed to disk (fsync), and then
 * renamed over the target: rename within one file system is atomic, so a reader sees either the
 * old file or the complete new one, never a prefix. A directory (a checkpoint: config, weights,
 * optimizer state) is built under `<dir>.tmp-<random>`, flushed, and swapped in with two renames
 * (`dir` → `<dir>.old-<random>`, tmp → `dir`); the old copy is then removed. A crash between the two
 * renames leaves no `dir` but a complete `.old-` copy, which `recoverReplacedDir` puts back. At no
 * point does `dir` name a half-written directory.
 */

import { randomBytes } from "node:crypto";
import {
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { basename, dirname, join } from "node:path";

function suffix(): string {
  return randomBytes(6).toString("hex");
}

/** fsync a directory so a rename inside it survives a power cut (a no-op where unsupported). */
function fsyncDir(dir: string): void {
  let fd: number | null = null;
  try {
    fd = openSync(dir, "r");
    fsyncSync(fd);
  } catch {
    // Some platforms (Windows) cannot open or fsync directories; the rename is still atomic.
  } finally {
    if (fd !== null) closeSync(fd);
  }
}

function writeAllSync(fd: number, data: Uint8Array): void {
  let off = 0;
  while (off < data.length) off += writeSync(fd, data, off, data.length - off);
}

/** Writes `data` to `path` atomically: temp file in the same directory, fsync, rename. */
export function writeFileAtomic(path: string, data: Uint8Array | string): void {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.tmp-${suffix()}`);
  let fd: number | null = null;
  try {
    fd = openSync(tmp, "wx", 0o644);
    writeAllSync(fd, bytes);
    fsyncSync(fd);
    closeSync(fd);
    fd = null;
    renameSync(tmp, path);
  } catch (err) {
    if (fd !== null) closeSync(fd);
    try {
      unlinkSync(tmp);
    } catch {
      // already gone
    }
    throw new Error(`could not write ${path}: ${(err as Error).message}`, { cause: err });
  }
  fsyncDir(dir);
}

/** Writes `value` as JSON (2-space indent, trailing newline) to `path` atomically. */
export function writeJsonAtomic(path: string, value: unknown): void {
  writeFileAtomic(path, `${JSON.stringify(value, null, 2)}\n`);
}

/** fsync every file and directory under `dir` (what a fill callback wrote may still be cached). */
function fsyncTree(dir: string): void {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) fsyncTree(p);
    else {
      const fd = openSync(p, "r");
      try {
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
    }
  }
  fsyncDir(dir);
}

function swapIn(dir: string, tmp: string): void {
  fsyncTree(tmp);
  const parent = dirname(dir);
  if (existsSync(dir)) {
    const old = join(parent, `${basename(dir)}.old-${suffix()}`);
    renameSync(dir, old);
    renameSync(tmp, dir);
    fsyncDir(parent);
    rmSync(old, { recursive: true, force: true });
  } else {
    renameSync(tmp, dir);
    fsyncDir(parent);
  }
}

function startTmp(dir: string): string {
  const parent = dirname(dir);
  mkdirSync(parent, { recursive: true });
  const tmp = join(parent, `${basename(dir)}.tmp-${suffix()}`);
  mkdirSync(tmp);
  return tmp;
}

/**
 * Replaces directory `dir` by one that `fill(tmpDir)` writes, atomically (see the file comment).
 * If `fill` throws, the temporary directory is removed and `dir` is left as it was.
 */
export function replaceDirAtomic(dir: string, fill: (tmpDir: string) => void): void {
  const tmp = startTmp(dir);
  try {
    fill(tmp);
    swapIn(dir, tmp);
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
}

/** `replaceDirAtomic` with an asynchronous `fill`. */
export async function replaceDirAtomicAsync(
  dir: string,
  fill: (tmpDir: string) => Promise<void>,
): Promise<void> {
  const tmp = startTmp(dir);
  try {
    await fill(tmp);
    swapIn(dir, tmp);
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
}

/**
 * Cleans up after a crash inside `replaceDirAtomic`: if `dir` is missing but an `.old-` copy
 * exists, that complete previous version is renamed back; leftover `.tmp-` and `.old-` siblings
 * (never complete, or superseded) are removed. Returns true when `dir` exists afterwards.
 * Call it before loading a checkpoint directory, never while another process may be replacing it.
 */
export function recoverReplacedDir(dir: string): boolean {
  const parent = dirname(dir);
  const base = basename(dir);
  if (!existsSync(parent)) return false;
  const siblings = readdirSync(parent).filter(
    (n) => n.startsWith(`${base}.tmp-`) || n.startsWith(`${base}.old-`),
  );
  if (!existsSync(dir)) {
    const old = siblings.find((n) => n.startsWith(`${base}.old-`));
    if (old !== undefined) {
      renameSync(join(parent, old), dir);
      fsyncDir(parent);
    }
  }
  for (const n of siblings) rmSync(join(parent, n), { recursive: true, force: true });
  return existsSync(dir);
}
