import assert from "node:assert/strict";
import { test } from "node:test";
import { karrasSigmasFromAlphaBar, noiseSchedule } from "../../src/diffusion/schedules.ts";
import { Scheduler } from "../../src/samplers/scheduler.ts";
import { fixture } from "./fixtures.ts";

interface Values {
  values: number[];
}
interface ScheduleEntry {
  scheduler_class: string;
  config_passed: {
    num_train_timesteps: number;
    beta_schedule: string;
    beta_start?: number;
    beta_end?: number;
  };
  betas: Values;
  alphas: Values;
  alphas_cumprod: Values;
  sigmas_k: Values;
}

function mismatches(mine: ArrayLike<number>, ref: readonly number[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < ref.length; i++)
    if (Math.fround(mine[i]!) !== Math.fround(ref[i]!)) out.push(`${i}: ${mine[i]} vs ${ref[i]}`);
  if (mine.length !== ref.length) out.push(`length ${mine.length} vs ${ref.length}`);
  return out;
}

test("betas, alphas, ᾱ and σ match diffusers exactly (float32)", () => {
  const { schedules } = fixture<{ schedules: ScheduleEntry[] }>("schedules.json");
  assert.equal(schedules.length, 3);
  for (const e of schedules) {
    const c = e.config_passed;
    const s = noiseSchedule({
      kind: c.beta_schedule as "linear",
      numTrainTimesteps: c.num_train_timesteps,
      betaStart: c.beta_start ?? 0.0001,
      betaEnd: c.beta_end ?? 0.02,
    });
    const name = c.beta_schedule;
    assert.deepEqual(mismatches(s.betas, e.betas.values), [], `${name} betas`);
    assert.deepEqual(mismatches(s.alphas, e.alphas.values), [], `${name} alphas`);
    assert.deepEqual(mismatches(s.alphasCumprod, e.alphas_cumprod.values), [], `${name} alphas_cumprod`);
    assert.deepEqual(
      mismatches(karrasSigmasFromAlphaBar(s.alphasCumprod), e.sigmas_k.values),
      [],
      `${name} sigmas`,
    );
  }
});

interface TimestepEntry {
  scheduler_class: string;
  config_passed: Record<string, unknown>;
  num_inference_steps: number;
  timesteps: Values;
  sigmas?: Values;
  init_noise_sigma?: { value: number };
}

test("all 222 timestep entries match diffusers' set_timesteps exactly (float32)", () => {
  const { entries } = fixture<{ entries: TimestepEntry[] }>("timesteps.json");
  assert.equal(entries.length, 222);
  const failures: string[] = [];
  for (const e of entries) {
    const s = Scheduler.fromConfig({ ...e.config_passed, _class_name: e.scheduler_class });
    const n = e.num_inference_steps;
    const label = `${e.scheduler_class} ${JSON.stringify(e.config_passed)} N=${n}`;
    const bad = mismatches(s.timesteps(n), e.timesteps.values);
    if (bad.length) failures.push(`${label} timesteps ${bad.slice(0, 3).join("; ")}`);
    if (e.sigmas) {
      const plan = s.plan(n);
      // Heun's reference lists each σ twice, as diffusers stores them; our ladder has each once.
      const ref =
        e.scheduler_class === "HeunDiscreteScheduler"
          ? e.sigmas.values.filter((_, i) => i === 0 || i % 2 === 1)
          : e.sigmas.values;
      const mine = "ladder" in plan ? plan.ladder.map((l) => l.sigma) : [];
      const badS = mismatches(mine, ref);
      if (badS.length) failures.push(`${label} sigmas ${badS.slice(0, 3).join("; ")}`);
    }
    const init = e.init_noise_sigma?.value ?? 1;
    if (Math.fround(s.initNoiseSigma(n)) !== Math.fround(init)) {
      failures.push(`${label} init_noise_sigma ${s.initNoiseSigma(n)} vs ${init}`);
    }
  }
  assert.deepEqual(failures, []);
});
