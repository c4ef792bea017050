// The bundled emoji models' AutoencoderKL (assets/models/emoji/vae, the same in emoji-mmdit): trained by
// configs/emoji-vae.json, its decoder then fine-tuned with the encoder frozen (configs/emoji-vae-ft.json).
// Its held-out reconstruction PSNR is issue 17's VAE target (≥ 28 dB at 64×64 → 4×16×16), measured here
// on the same 128 held-out emoji the training runs evaluate on.
import assert from "node:assert/strict";
import { test } from "node:test";
import { AutoencoderKL } from "../../src/models/vae/model.ts";
import { resolveModelDir } from "../../src/pipelines/pipeline-dir.ts";
import { loadVaeData } from "../../src/train/vae-data.ts";
import { reconstructionEval } from "../../src/train/vae-eval.ts";

test("the bundled emoji VAE reconstructs held-out emoji at ≥ 28 dB PSNR, and both emoji models share it", async () => {
  const vae = await AutoencoderKL.fromPretrained(resolveModelDir("emoji"));
  const other = await AutoencoderKL.fromPretrained(resolveModelDir("emoji-mmdit"));
  try {
    for (const [k, v] of vae.params)
      assert.deepEqual(other.params.get(k)?.data, v.data, `emoji-mmdit's vae differs at ${k}`);
    assert.equal(other.scalingFactor, vae.scalingFactor);
    const { holdout } = loadVaeData({ dataset: "emoji", path: null, size: 64, channels: 3, holdout: 128 });
    const evaluator = reconstructionEval(vae.config, holdout, 32, {});
    const r = await evaluator.run(vae.params);
    evaluator.dispose();
    console.log(`# bundled emoji VAE: held-out PSNR ${r.psnr.toFixed(2)} dB on ${holdout.count} images`);
    assert.equal(holdout.count, 128);
    assert.ok(r.psnr >= 28, `held-out PSNR ${r.psnr.toFixed(2)} dB`);
  } finally {
    vae.dispose();
    other.dispose();
  }
});
