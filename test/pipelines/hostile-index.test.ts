// model_index.json from outside: a _class_name that is not text (an object whose toString is not a
// function could not even be printed) or that Object.prototype has ("constructor") is refused in one
// line naming the file and the pipelines diffuse loads (found by the fault harness's fuzzer).
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { loadPipeline } from "../../src/pipelines/pipeline-dir.ts";

const dir = mkdtempSync(join(tmpdir(), "diffuse-hostile-index-"));
after(() => rmSync(dir, { recursive: true, force: true }));

test("a _class_name that is an object, a prototype name or missing is refused in one line", async () => {
  for (const [named, shown] of [
    [{ toString: 1 }, '{"toString":1}'],
    ["constructor", '"constructor"'],
    [undefined, "(no _class_name)"],
  ] as const) {
    writeFileSync(
      join(dir, "model_index.json"),
      JSON.stringify({ _class_name: named, unet: ["diffusers", "UNet2DModel"] }),
    );
    await assert.rejects(loadPipeline(dir), (e: Error) => {
      assert.equal(e.constructor, Error);
      const at = e.message.indexOf(
        `model_index.json: pipeline ${shown} is not one diffuse can load; supported: DDPMPipeline`,
      );
      assert.ok(at > 0, e.message);
      assert.doesNotMatch(e.message, /\n/);
      return true;
    });
  }
});
