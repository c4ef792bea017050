/**
 * Gives memory freed by released sessions back to the system. glibc's malloc keeps freed memory in
 * its heaps (one per thread that allocated: a worker thread's sessions live in their own), so a
 * process's RSS stays at its high-water mark after ONNX Runtime frees a session's arena;
 * `malloc_trim(0)` returns the free pages of every heap (measured: a studio worker after 14 job shapes
 * and their release, ~250 MB → ~160 MB). Called through koffi, as capi.ts calls ONNX Runtime; a
 * no-op where that is not possible (not Linux with glibc, koffi missing).
 */
type Trim = (pad: number) => number;

let trim: Promise<Trim | null> | null = null;

async function load(): Promise<Trim | null> {
  if (process.platform !== "linux") return null;
  const report = process.report?.getReport?.() as { header?: { glibcVersionRuntime?: string } } | undefined;
  if (!report?.header?.glibcVersionRuntime) return null;
  try {
    const koffi = (await import("koffi")).default;
    const f = koffi.load("libc.so.6").func("int malloc_trim(size_t pad)");
    return (pad) => f(pad) as number;
  } catch {
    return null;
  }
}

/** Returns freed heap memory to the system where the C library can; resolves to whether it could. */
export async function releaseFreedMemory(): Promise<boolean> {
  trim ??= load();
  const f = await trim;
  if (!f) return false;
  f(0);
  return true;
}
