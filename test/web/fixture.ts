/** Test fixtures for the studio: a tiny class-conditional model and a fake training run in a temp folder. */
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { makeGrid } from "../../src/io/grid.ts";
import { encodePng } from "../../src/io/png.ts";
import { UNet2DModel } from "../../src/models/unet/model.ts";
import { savePipeline } from "../../src/pipelines/pipeline-dir.ts";

export interface Fixture {
  root: string;
  modelDir: string;
  runsDir: string;
  runDir: string;
}

/** 3 classes (labels 0..2, 3 = no class), 8×8 grey images, two levels: a forward pass takes milliseconds. */
export const TINY_UNET = {
  sample_size: 8,
  in_channels: 1,
  out_channels: 1,
  block_out_channels: [8, 16],
  layers_per_block: 1,
  down_block_types: ["DownBlock2D", "DownBlock2D"],
  up_block_types: ["UpBlock2D", "UpBlock2D"],
  norm_num_groups: 4,
  num_class_embeds: 4,
};

export async function makeFixture(): Promise<Fixture> {
  const root = mkdtempSync(join(tmpdir(), "diffuse-studio-"));
  const modelDir = join(root, "tiny");
  const unet = UNet2DModel.fromConfig(TINY_UNET, { seed: 1 });
  await savePipeline(
    modelDir,
    unet,
    {
      _class_name: "DDPMScheduler",
      num_train_timesteps: 1000,
      beta_schedule: "linear",
      beta_start: 0.0001,
      beta_end: 0.02,
      prediction_type: "epsilon",
    },
    { numClasses: 3, dataset: "toy" },
  );
  const runsDir = join(root, "runs");
  const runDir = join(runsDir, "toy-run");
  mkdirSync(join(runDir, "samples"), { recursive: true });
  writeFileSync(
    join(runDir, "config.json"),
    JSON.stringify({ training: { steps: 100 }, data: { dataset: "toy" } }),
  );
  writeFileSync(join(runDir, "metrics.jsonl"), metricLines(1, 3));
  writeSample(runDir, 10);
  return { root, modelDir, runsDir, runDir };
}

/** metrics.jsonl lines for log steps from..to (step = 10·k), as the trainer writes them. */
export function metricLines(from: number, to: number): string {
  let s = "";
  for (let k = from; k <= to; k++) {
    const step = 10 * k;
    s += `${JSON.stringify({ step, loss: 1 / k, lr: 1e-3, grad_norm: 1, img_per_s: 100, time: Date.now() })}\n`;
  }
  return s;
}

export function writeSample(runDir: string, step: number): void {
  const img = { data: new Float32Array(2 * 8 * 8).map((_, i) => (i % 7) / 7), shape: [2, 1, 8, 8] };
  writeFileSync(
    join(runDir, "samples", `step-${String(step).padStart(6, "0")}.png`),
    encodePng(makeGrid(img, { nrow: 2 })),
  );
}
