import assert from "node:assert/strict";
import { test } from "node:test";
import { combineGuidance, guidedNetwork, rescaleNoiseCfg } from "../../src/diffusion/guidance.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import { type ArrayJson, fixture, relError, tensorOf } from "../samplers/fixtures.ts";

const cfg = fixture<{
  inputs: { eps_uncond: ArrayJson; eps_cond: ArrayJson; guidance_scale: number; guidance_rescale: number };
  guided: ArrayJson;
  rescale_noise_cfg: ArrayJson;
}>("cfg.json");

test("classifier-free guidance and rescale_noise_cfg match diffusers within 1e-6", () => {
  const { eps_uncond, eps_cond, guidance_scale, guidance_rescale } = cfg.inputs;
  const guided = combineGuidance(tensorOf(eps_uncond), tensorOf(eps_cond), guidance_scale);
  assert.ok(relError(guided.data, cfg.guided.data) <= 1e-6, "guided");
  const rescaled = rescaleNoiseCfg(guided, tensorOf(eps_cond), guidance_rescale);
  assert.ok(relError(rescaled.data, cfg.rescale_noise_cfg.data) <= 1e-6, "rescaled");
});

test("guidedNetwork makes ONE batched forward of [uncond; cond] and combines it", async () => {
  const { eps_uncond, eps_cond, guidance_scale, guidance_rescale } = cfg.inputs;
  const x = HostTensor.zeros(eps_cond.shape);
  let calls = 0;
  const batched = (input: HostTensor, t: number) => {
    calls++;
    assert.equal(t, 500);
    assert.deepEqual(input.shape, [4, 3, 8, 8]);
    const out = new Float32Array(input.size);
    out.set(eps_uncond.data);
    out.set(eps_cond.data, out.length / 2);
    return new HostTensor(out, input.shape);
  };
  const net = guidedNetwork(batched, guidance_scale, { rescale: guidance_rescale });
  const out = await net(x, 500);
  assert.equal(calls, 1);
  assert.ok(relError(out.data as Float32Array, cfg.rescale_noise_cfg.data) <= 1e-6);
  const plain = await guidedNetwork(batched, guidance_scale)(x, 500);
  assert.ok(relError(plain.data as Float32Array, cfg.guided.data) <= 1e-6);
  assert.throws(() => guidedNetwork(batched, 7.5, { rescale: 2 }), /rescale must be in \[0, 1\]/);
});

test("guidance scale 1 returns the conditional prediction; 0 the unconditional", () => {
  const u = new HostTensor(Float32Array.of(1, 2, 3, 4), [1, 4]) as HostTensor<"float32">;
  const c = new HostTensor(Float32Array.of(-1, 0, 5, 4), [1, 4]) as HostTensor<"float32">;
  assert.deepEqual([...combineGuidance(u, c, 1).data], [...c.data]);
  assert.deepEqual([...combineGuidance(u, c, 0).data], [...u.data]);
});
