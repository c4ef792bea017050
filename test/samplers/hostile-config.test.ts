// Scheduler configs from outside are held to bounds before any schedule is computed: a hostile
// num_train_timesteps (found by the fault harness's fuzzer) is refused in one line instead of
// allocating gigabytes (2^31 − 1 float64 betas) and computing for minutes.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Scheduler } from "../../src/samplers/scheduler.ts";

test("num_train_timesteps above 100,000 is refused, naming the key, the bound and the value", () => {
  for (const cls of ["DDIMScheduler", "HeunDiscreteScheduler", "FlowMatchEulerDiscreteScheduler"]) {
    const t0 = performance.now();
    assert.throws(
      () => Scheduler.fromConfig({ _class_name: cls, num_train_timesteps: 2147483647 }),
      new RegExp(
        `^Error: ${cls} config: "num_train_timesteps" must be an integer >= 1 and <= 100000, got 2147483647$`,
      ),
    );
    assert.ok(performance.now() - t0 < 100);
  }
  assert.equal(
    Scheduler.fromConfig({ _class_name: "DDIMScheduler", num_train_timesteps: 4000 }).timesteps(10).length,
    10,
  );
});

test("a name that Object.prototype has (constructor, toString) is no alias of a scheduler option", () => {
  for (const v of ["constructor", "toString", "__proto__"]) {
    assert.throws(
      () => Scheduler.fromConfig({ _class_name: "DPMSolverMultistepScheduler", algorithm_type: v }),
      new RegExp(
        `^Error: DPMSolverMultistepScheduler config: "algorithm_type" must be one of dpmsolver\\+\\+, sde-dpmsolver\\+\\+, dpmsolver, sde-dpmsolver, got "${v}"$`,
      ),
    );
  }
});
