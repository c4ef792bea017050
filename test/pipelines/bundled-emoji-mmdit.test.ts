// The bundled MM-DiT text-to-image model (assets/models/emoji-mmdit, scripts/bundle-emoji.ts of the
// configs/emoji-mmdit.json run): a StableDiffusion3Pipeline folder with one jointly trained CLIP that
// draws the asked emoji, judged by the project's emoji judge on training captions and held-out
// compositions (a small sample at fewer steps than its card's 500 / 475 prompts at 25).
import assert from "node:assert/strict";
import { test } from "node:test";
import { evalEmoji } from "../../src/eval/emoji-eval.ts";
import { disposePipeline, loadPipeline } from "../../src/pipelines/pipeline-dir.ts";
import { pipelineGenerate } from "../../src/pipelines/run.ts";
import { schedulerFor } from "../../src/pipelines/scheduler-names.ts";

test("emoji-mmdit: an SD3 pipeline with one CLIP that draws the asked emoji (judge top-5 on training and held-out prompts)", async () => {
  const pipe = await loadPipeline("emoji-mmdit");
  try {
    assert.equal(pipe.pipelineClass, "StableDiffusion3Pipeline");
    assert.equal(pipe.denoiser.bound.className, "SD3Transformer2DModel");
    assert.ok(pipe.text?.sd3 && !pipe.text.sd3.second, "one text encoder (text_encoder_2 null)");
    assert.deepEqual(pipe.info.sampling, { scheduler: "dpm++2m", steps: 25, guidance: 3 });
    const scheduler = schedulerFor({ name: "dpm++2m" }, pipe.schedulerConfig);
    let call = 0;
    const r = await evalEmoji(
      (prompts) => pipelineGenerate(pipe, scheduler, { prompts, steps: 12, guidance: 3, seed: call++ }),
      { prompts: 24, batchSize: 24, range: "0,1" },
    );
    console.log(
      `# emoji-mmdit, 12 steps, 24 + 24 prompts: top-5 ${r.train.identityTop5} / ${r.holdout.identityTop5}, vendor ${r.train.vendorAccuracy} / ${r.holdout.vendorAccuracy}`,
    );
    // its card: 63.2% / 44.2% top-5 and 79% / 83% vendor on 500 / 475 prompts at 25 steps
    assert.ok(r.train.identityTop5 >= 0.4, `training prompts: top-5 ${r.train.identityTop5}`);
    assert.ok(r.holdout.identityTop5 >= 0.2, `held-out prompts: top-5 ${r.holdout.identityTop5}`);
    assert.ok(r.holdout.vendorAccuracy >= 0.6, `held-out vendor ${r.holdout.vendorAccuracy}`);
  } finally {
    disposePipeline(pipe);
  }
});
