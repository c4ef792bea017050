import assert from "node:assert/strict";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import {
  recoverReplacedDir,
  replaceDirAtomic,
  replaceDirAtomicAsync,
  writeFileAtomic,
  writeJsonAtomic,
} from "../../src/io/atomic.ts";

function withTmp(body: (dir: string) => void | Promise<void>): () => Promise<void> {
  return async () => {
    const dir = mkdtempSync(join(tmpdir(), "diffuse-atomic-"));
    try {
      await body(dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
}

test(
  "writeFileAtomic and writeJsonAtomic replace a file and leave no temp files",
  withTmp((dir) => {
    const p = join(dir, "a.json");
    writeJsonAtomic(p, { step: 1 });
    writeJsonAtomic(p, { step: 2 });
    assert.deepEqual(JSON.parse(readFileSync(p, "utf8")), { step: 2 });
    writeFileAtomic(join(dir, "b.bin"), Uint8Array.of(1, 2, 3));
    assert.deepEqual([...readFileSync(join(dir, "b.bin"))], [1, 2, 3]);
    assert.deepEqual(readdirSync(dir).sort(), ["a.json", "b.bin"]);
    assert.throws(
      () => writeFileAtomic(join(dir, "no", "such", "dir.txt"), "x"),
      /could not write .*dir\.txt/,
    );
  }),
);

test(
  "replaceDirAtomic swaps a whole directory; a failing fill leaves the old one",
  withTmp(async (dir) => {
    const ck = join(dir, "ckpt");
    replaceDirAtomic(ck, (tmp) => writeFileSync(join(tmp, "v.txt"), "1"));
    replaceDirAtomic(ck, (tmp) => {
      mkdirSync(join(tmp, "sub"));
      writeFileSync(join(tmp, "sub", "v.txt"), "2");
    });
    assert.equal(readFileSync(join(ck, "sub", "v.txt"), "utf8"), "2");
    assert.ok(!existsSync(join(ck, "v.txt")), "old contents are gone");
    assert.throws(
      () =>
        replaceDirAtomic(ck, (tmp) => {
          writeFileSync(join(tmp, "half.txt"), "…");
          throw new Error("disk full");
        }),
      /disk full/,
    );
    await assert.rejects(
      replaceDirAtomicAsync(ck, async () => {
        throw new Error("worker died");
      }),
      /worker died/,
    );
    assert.equal(readFileSync(join(ck, "sub", "v.txt"), "utf8"), "2");
    assert.deepEqual(readdirSync(dir), ["ckpt"]);
    await replaceDirAtomicAsync(ck, async (tmp) => writeFileSync(join(tmp, "v.txt"), "3"));
    assert.equal(readFileSync(join(ck, "v.txt"), "utf8"), "3");
  }),
);

test(
  "recoverReplacedDir restores the old copy after a crash between the renames",
  withTmp((dir) => {
    const ck = join(dir, "ckpt");
    replaceDirAtomic(ck, (tmp) => writeFileSync(join(tmp, "v.txt"), "old"));
    // Simulate the crash: dir renamed away, the new tmp complete, the process gone.
    renameSync(ck, join(dir, "ckpt.old-123"));
    mkdirSync(join(dir, "ckpt.tmp-456"));
    assert.equal(recoverReplacedDir(ck), true);
    assert.equal(readFileSync(join(ck, "v.txt"), "utf8"), "old");
    assert.deepEqual(readdirSync(dir), ["ckpt"]);
    // A crash during the fill: only a stale tmp, which is removed.
    mkdirSync(join(dir, "ckpt.tmp-789"));
    assert.equal(recoverReplacedDir(ck), true);
    assert.deepEqual(readdirSync(dir), ["ckpt"]);
    assert.equal(recoverReplacedDir(join(dir, "never")), false);
  }),
);
