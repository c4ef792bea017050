// Command-line errors are one line that names the cause and the fix: a negative number after a flag,
// an unknown flag, an --out that is a file or cannot be written, a model folder that cannot be read
// (not "not a model folder"). Permission cases need a user that file modes apply to (not root).
import assert from "node:assert/strict";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { UsageError } from "../../src/cli/args.ts";
import { run as sample } from "../../src/cli/sample.ts";
import { run as train } from "../../src/cli/train.ts";
import { UNet2DModel } from "../../src/models/unet/model.ts";
import { loadPipeline, savePipeline } from "../../src/pipelines/pipeline-dir.ts";
import { quietly } from "../support/quiet.ts";
import { TINY_UNET_ATTN } from "../support/tiny-models.ts";

const dir = mkdtempSync(join(tmpdir(), "diffuse-cli-errors-"));
after(() => {
  chmodSync(dir, 0o700);
  rmSync(dir, { recursive: true, force: true });
});
const asRoot = process.getuid?.() === 0;
const modes = asRoot ? "file modes do not stop root" : false;

/** The UsageError (one line) or Error that `f` rejects with. */
async function failure(f: () => Promise<void>): Promise<Error> {
  try {
    await quietly(f);
  } catch (e) {
    return e as Error;
  }
  assert.fail("expected an error");
}

test("a negative number after a flag is its value, checked as such; parser errors are one line", async () => {
  for (const [argv, re] of [
    [["--steps", "-5"], /^--steps: steps must be an integer from 1 to 1000, got -5$/],
    [["--seed", "-1"], /^--seed: seed must be an integer from 0 to 4294967295, got -1$/],
    [["--bogus"], /^unknown flag --bogus; run "diffuse sample --help" for the flags it takes$/],
    [["--out"], /^--out needs a value; run "diffuse sample --help"/],
    [["--karras=yes"], /^--karras takes no value; run "diffuse sample --help"/],
    [["--out", "-x"], /^--out needs a value; to pass one that starts with "-", write --out=VALUE; run/],
  ] as const) {
    const e = await failure(() => sample([...argv]));
    assert.ok(e instanceof UsageError, `${argv.join(" ")}: ${e.message}`);
    assert.match(e.message, re);
  }
  const e = await failure(() => train(["--steps", "-5"]));
  assert.match(e.message, /^--steps must be an integer ≥ 1, got "-5"$/);
});

test("--out that is a file, or under one, is refused before any work", async () => {
  const file = join(dir, "a-file");
  writeFileSync(file, "x");
  for (const run of [sample, train]) {
    const e = await failure(() => run(["--out", file]));
    assert.ok(e instanceof UsageError);
    assert.equal(
      e.message,
      `--out ${file} is a file, not a folder; pass a folder (it is created if missing)`,
    );
    const under = await failure(() => run(["--out", join(file, "sub")]));
    assert.match(
      under.message,
      /: .*a-file is a file, so no folder can be made under it; pass another folder$/,
    );
  }
});

test("an --out that cannot be written is refused with the reason", { skip: modes }, async () => {
  const locked = join(dir, "locked");
  mkdirSync(locked);
  chmodSync(locked, 0o500);
  for (const run of [sample, train]) {
    const e = await failure(() => run(["--out", join(locked, "out")]));
    assert.ok(e instanceof UsageError);
    assert.match(
      e.message,
      /cannot write in .*locked: permission denied \(EACCES\); pass a folder you can write to$/,
    );
  }
});

test("an unreadable model folder is reported as unreadable, not as no model", { skip: modes }, async () => {
  const model = join(dir, "model");
  await savePipeline(
    model,
    UNet2DModel.fromConfig(TINY_UNET_ATTN),
    { _class_name: "DDPMScheduler" },
    {
      numClasses: 3,
    },
  );
  chmodSync(join(model, "unet"), 0o000);
  try {
    const e = await failure(() => sample(["--model", model, "--out", join(dir, "out")]));
    assert.match(
      e.message,
      /^cannot read .*model[/\\]unet: permission denied \(EACCES\); make the model folder readable \(chmod -R u\+rX .*\) or run as the user who owns it$/,
    );
    await assert.rejects(
      UNet2DModel.fromPretrained(join(model, "unet")),
      /^Error: UNet2DModel: cannot read .*unet: permission denied \(EACCES\)/,
    );
    // the library's loader too (it once said "not a diffusers model folder")
    await assert.rejects(
      loadPipeline(model),
      /^Error: cannot read .*model[/\\]unet: permission denied \(EACCES\); make the model folder readable/,
    );
  } finally {
    chmodSync(join(model, "unet"), 0o755);
  }
  chmodSync(model, 0o000);
  try {
    await assert.rejects(loadPipeline(model), /^Error: cannot read .*model: permission denied \(EACCES\)/);
  } finally {
    chmodSync(model, 0o755);
  }
});
