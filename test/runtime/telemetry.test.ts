// ONNX Runtime's telemetry is off: running a model through diffuse writes no device-ID database under
// HOME (ONNX Runtime's own default, ORT_DISABLE_TELEMETRY=0, does — the control that this build has
// telemetry to turn off at all).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";

const dir = mkdtempSync(join(tmpdir(), "diffuse-telemetry-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const model = new URL("../../src/models/unet/model.ts", import.meta.url).href;
const script = join(dir, "run.mts");
writeFileSync(
  script,
  `import { UNet2DModel } from ${JSON.stringify(model)};
const unet = UNet2DModel.fromConfig({ in_channels: 1, out_channels: 1, block_out_channels: [8], layers_per_block: 1,
  down_block_types: ["DownBlock2D"], up_block_types: ["UpBlock2D"], norm_num_groups: 4 });
const y = await unet.forward({ data: new Float32Array(16), shape: [1, 1, 4, 4] }, 10);
console.log(y.shape.join("x"));
`,
);

/** Runs one forward pass in a fresh process with its own HOME; whether ONNX Runtime left its telemetry files there. */
function telemetryFiles(name: string, extra: NodeJS.ProcessEnv): boolean {
  const home = join(dir, name);
  mkdirSync(home);
  const env: NodeJS.ProcessEnv = { PATH: process.env["PATH"], HOME: home, ...extra };
  // (ONNX Runtime stays quiet on CI machines it recognises: none of their variables is passed)
  const r = spawnSync(process.execPath, ["--import", "tsx", script], { env, encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /1x1x4x4/);
  return existsSync(join(home, ".cache", "Microsoft"));
}

test("running a model writes no ONNX Runtime telemetry files", { timeout: 120_000 }, (t) => {
  if (!telemetryFiles("control", { ORT_DISABLE_TELEMETRY: "0" })) {
    t.skip("this ONNX Runtime build writes no telemetry files to turn off");
    return;
  }
  assert.equal(telemetryFiles("default", {}), false, "telemetry files were written under HOME");
});
