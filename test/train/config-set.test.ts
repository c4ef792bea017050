// `--set SECTION.FIELD=VALUE` on a run config: fields only, never a name that reaches an object's
// prototype (`__proto__`, `constructor`, `prototype`) or one its section does not have.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { UsageError } from "../../src/cli/args.ts";
import { run } from "../../src/cli/train.ts";
import { ConfigFieldError, resolveConfig } from "../../src/train/config.ts";
import { setField, settableFields } from "../../src/train/config-file.ts";
import { resolveVaeTrainConfig, vaeSettableFields } from "../../src/train/vae-config.ts";

const dir = mkdtempSync(join(tmpdir(), "diffuse-set-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const config = {
  model: {
    _class_name: "UNet2DModel",
    sample_size: 8,
    in_channels: 1,
    out_channels: 1,
    block_out_channels: [8, 16],
    layers_per_block: 1,
    down_block_types: ["DownBlock2D", "DownBlock2D"],
    up_block_types: ["UpBlock2D", "UpBlock2D"],
    norm_num_groups: 4,
  },
  scheduler: { _class_name: "DDPMScheduler" },
  training: { steps: 1 },
};

const refused = (path: string, msg: RegExp) =>
  assert.throws(
    () => setField(config, path, "1", settableFields(config)),
    (e: Error) => e instanceof ConfigFieldError && msg.test(e.message),
    path,
  );

test("--set refuses the names that reach a prototype, and nothing leaks into Object.prototype", () => {
  try {
    for (const path of [
      "__proto__.x",
      "training.__proto__.x",
      "model.__proto__.z",
      "training.constructor",
      "prototype",
    ]) {
      assert.throws(
        () => setField(config, path, "1"),
        /is not a config field; name one as SECTION\.FIELD, e.g\. --set training\.lr=3e-4/,
        path,
      );
    }
    assert.equal(({} as Record<string, unknown>)["x"], undefined);
    assert.equal(({} as Record<string, unknown>)["z"], undefined);
  } finally {
    // (a failing run of this test must not poison the others)
    delete (Object.prototype as Record<string, unknown>)["x"];
    delete (Object.prototype as Record<string, unknown>)["z"];
  }
});

test("--set names a field of its section, or the message lists the fields", () => {
  refused("training.toString", /"toString" is not a field of training; its fields: steps, batch_size, lr/);
  refused("training.stpes", /"stpes" is not a field of training/);
  refused("trianing.steps", /"trianing" is not a config section; use one of model, scheduler/);
  refused(
    "model.layers_per_blok",
    /"layers_per_blok" is not a field of model; its fields: .*layers_per_block/,
  );
  refused("training.steps.x", /"training\.steps" is one field; set it whole/);
  const ok = setField(config, "training.lr", "3e-4", settableFields(config));
  assert.deepEqual(ok["training"], { steps: 1, lr: 3e-4 });
  assert.equal(config.training.steps, 1, "the original is left alone");
  const model = setField(config, "model.layers_per_block", "2", settableFields(config));
  assert.equal((model["model"] as { layers_per_block: number }).layers_per_block, 2);
  // a scheduler's keys are its class's: free here, checked when the scheduler is built
  assert.doesNotThrow(() => setField(config, "scheduler.beta_schedule", "linear", settableFields(config)));
  // an autoencoder run has its own sections and fields
  assert.throws(
    () => setField({}, "training.snr_gamma", "1", vaeSettableFields()),
    /"snr_gamma" is not a field of training; its fields: steps, batch_size/,
  );
  assert.doesNotThrow(() => setField({}, "training.kl_weight", "1e-5", vaeSettableFields()));
});

test("a config that names an inherited property is refused, and nothing of it is kept", () => {
  for (const field of ["toString", "constructor", "hasOwnProperty"]) {
    assert.throws(
      () => resolveConfig({ ...config, training: { steps: 1, [field]: 5 } }),
      new RegExp(`unknown config field "training\\.${field}"`),
    );
  }
  const parsed = JSON.parse('{"steps": 1, "__proto__": {"x": 1}}') as Record<string, unknown>;
  assert.throws(
    () => resolveConfig({ ...config, training: parsed }),
    /unknown config field "training\.__proto__"/,
  );
  assert.throws(
    () => resolveVaeTrainConfig({ model: { _class_name: "AutoencoderKL" }, training: { toString: 5 } }),
    /unknown config field "training\.toString"/,
  );
});

test("diffuse train --set with a bad name is a usage error, before any training", async () => {
  const file = join(dir, "tiny.json");
  writeFileSync(file, JSON.stringify(config));
  for (const kv of [
    "__proto__.x=1",
    "training.toString=5",
    "model.__proto__.z=1",
    "training.constructor=1",
  ]) {
    await assert.rejects(
      run(["--config", file, "--out", join(dir, "run"), "--set", kv]),
      (e: Error) => e instanceof UsageError && /^--set /.test(e.message),
      kv,
    );
  }
  assert.equal(({} as Record<string, unknown>)["x"], undefined);
});
