import assert from "node:assert/strict";
import { test } from "node:test";
import { Scheduler } from "../../src/samplers/scheduler.ts";
import type { StepInfo } from "../../src/samplers/types.ts";
import type { HostTensor } from "../../src/tensor/host.ts";
import { type ArrayJson, fixture, referenceModel, relError, tensorOf } from "./fixtures.ts";

interface LoopStep {
  i: number;
  t_passed_to_model: number;
  model_input: ArrayJson | string;
  model_output: ArrayJson;
  prev_sample: ArrayJson;
  denoised?: ArrayJson;
}
interface LoopCase {
  id: string;
  scheduler_class: string;
  config_passed: Record<string, unknown>;
  num_inference_steps: number;
  step_kwargs: { eta?: number };
  initial_latents: ArrayJson;
  steps: LoopStep[];
  final_sample: ArrayJson;
  noise: { draws: ArrayJson[] } | null;
}

const loops = fixture<{ initial_sample_raw: ArrayJson; cases: LoopCase[] }>("loops.json");
const TOL = 1e-5;

for (const c of loops.cases) {
  test(`diffusers loop ${c.id}: every step within ${TOL}`, async () => {
    const s = Scheduler.fromConfig({ ...c.config_passed, _class_name: c.scheduler_class });
    const inputs: { x: HostTensor; t: number }[] = [];
    const model = (x: HostTensor, t: number) => {
      inputs.push({ x, t });
      return referenceModel(x, t);
    };
    const draws = c.noise?.draws ?? [];
    let drawn = 0;
    const noise = (shape: readonly number[]) => {
      const d = draws[drawn++];
      assert.ok(d, `${c.id}: the sampler drew more noise than diffusers (${drawn})`);
      assert.deepEqual([...shape], d.shape);
      return Float32Array.from(d.data);
    };
    const seen: StepInfo[] = [];
    const x = await s.sample(model, tensorOf(loops.initial_sample_raw), {
      steps: c.num_inference_steps,
      eta: c.step_kwargs.eta,
      noise,
      onStep: (info) => {
        seen.push(info);
      },
    });
    assert.equal(seen.length, c.steps.length, "number of steps");
    assert.equal(inputs.length, c.steps.length, "number of model evaluations");
    assert.equal(drawn, draws.length, "number of noise draws");
    let latents = tensorOf(c.initial_latents);
    for (const [k, ref] of c.steps.entries()) {
      const mine = seen[k]!;
      assert.equal(mine.i, k);
      assert.equal(Math.fround(inputs[k]!.t), Math.fround(ref.t_passed_to_model), `step ${k} t`);
      const refInput = typeof ref.model_input === "string" ? latents : tensorOf(ref.model_input);
      const eIn = relError(inputs[k]!.x.data as Float32Array, refInput.data);
      assert.ok(eIn <= TOL, `step ${k}: model input off by ${eIn}`);
      const e = relError(mine.x.data, ref.prev_sample.data);
      assert.ok(e <= TOL, `step ${k} (t=${ref.t_passed_to_model}): prev_sample off by ${e}`);
      if (ref.denoised) {
        const ed = relError(mine.x0.data, ref.denoised.data);
        assert.ok(ed <= TOL, `step ${k}: denoised off by ${ed}`);
      }
      latents = tensorOf(ref.prev_sample);
    }
    assert.ok(relError(x.data, c.final_sample.data) <= TOL, "final sample");
  });
}
