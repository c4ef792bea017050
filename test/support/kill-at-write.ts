/**
 * A child process for crash tests: runs a training loop in this thread and kills itself (SIGKILL, as
 * a power cut or the OOM killer would) at a chosen file-system call: the Nth `openSync` of a path
 * that matches a pattern (every atomic write opens its temporary file so), or the Nth `renameSync`
 * whose destination matches one.
 *
 *   node --import tsx test/support/kill-at-write.ts KIND CONFIG_JSON OUT_DIR open|rename PATTERN N
 *
 * KIND is "denoiser" (train/trainer.ts) or "vae" (train/vae-trainer.ts). Exits 0 when the run ends
 * without reaching the call.
 */
import fs from "node:fs";
import { syncBuiltinESMExports } from "node:module";

const [kind, configJson, outDir, call, pattern, nth] = process.argv.slice(2);
if (!kind || !configJson || !outDir || (call !== "open" && call !== "rename") || !pattern || !nth) {
  console.error("usage: kill-at-write.ts denoiser|vae CONFIG_JSON OUT_DIR open|rename PATTERN N");
  process.exit(2);
}
const re = new RegExp(pattern);
let seen = 0;
const hit = (path: unknown) => {
  if (re.test(String(path)) && ++seen >= Number(nth)) process.kill(process.pid, "SIGKILL");
};
if (call === "open") {
  const open = fs.openSync;
  fs.openSync = ((path: fs.PathLike, ...rest: unknown[]) => {
    hit(path);
    return (open as (...a: unknown[]) => number)(path, ...rest);
  }) as typeof fs.openSync;
} else {
  const rename = fs.renameSync;
  fs.renameSync = (from: fs.PathLike, to: fs.PathLike) => {
    hit(to);
    rename(from, to);
  };
}
// the ESM named exports (import { openSync } from "node:fs") follow the patched functions
syncBuiltinESMExports();

const config = JSON.parse(configJson) as Record<string, unknown>;
const ctx = { post: () => {}, signal: new AbortController().signal };
if (kind === "vae") {
  const { trainVae } = await import("../../src/train/vae-trainer.ts");
  await trainVae(config, { runDir: outDir });
} else {
  const { trainRun } = await import("../../src/train/trainer.ts");
  await trainRun({ config, outDir }, ctx);
}
