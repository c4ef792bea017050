import assert from "node:assert/strict";
import { test } from "node:test";
import type { F32 } from "../../src/diffusion/float32.ts";
import { vpLevel } from "../../src/diffusion/parameterization.ts";
import { clipX0, dynamicThreshold, quantile32, thresholdX0 } from "../../src/diffusion/thresholding.ts";
import { HostTensor } from "../../src/tensor/host.ts";

test("quantile interpolates linearly between order statistics (torch.quantile)", () => {
  assert.equal(quantile32(Float32Array.of(4, 1, 3, 2), 0.5), 2.5);
  assert.equal(quantile32(Float32Array.of(0, 10), 0.995), Math.fround(Math.fround(0.995) * 10));
});

test("dynamic thresholding (Saharia et al.) clips each sample to its quantile s ≥ 1 and divides by s", () => {
  const x0 = new HostTensor(Float32Array.of(0.5, -0.2, 0.1, 0.3, 4, -4, 2, 0), [2, 4]) as F32;
  const out = dynamicThreshold(x0, 1, 3);
  // Sample 0: s = max(1, quantile) = 1, unchanged. Sample 1: s = min(4, 3) = 3: clip to ±3, divide by 3.
  assert.deepEqual([...out.data.slice(0, 4)], [...x0.data.slice(0, 4)]);
  assert.deepEqual([...out.data.slice(4)], [1, -1, Math.fround(2 / 3), 0]);
});

test("clipping and thresholding act on x̂0 only, unless ε̂ is asked to follow", async () => {
  const x0 = new HostTensor(Float32Array.of(3, -3), [1, 2]) as F32;
  const eps = new HostTensor(Float32Array.of(1, 1), [1, 2]) as F32;
  const d = async () => ({ x0, eps });
  const x = new HostTensor(Float32Array.of(0.5, 0.5), [1, 2]) as F32;
  const level = vpLevel(0.5, 10);
  const clipped = await clipX0(d, 1)(x, level);
  assert.deepEqual([...clipped.x0.data], [1, -1]);
  assert.equal(clipped.eps, eps);
  const follow = await clipX0(d, 1, { updateEps: true })(x, level);
  assert.ok(Math.abs(follow.eps.data[0]! - (0.5 - Math.SQRT1_2) / Math.SQRT1_2) < 1e-6);
  const t = await thresholdX0(d, 0.995, 1)(x, level);
  assert.deepEqual([...t.x0.data], [1, -1]);
});
