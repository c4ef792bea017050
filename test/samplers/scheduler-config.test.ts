// Scheduler.fromConfig beyond the reference vectors: validation, and config keys the vectors don't cover.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { karrasSigmasFromAlphaBar } from "../../src/diffusion/schedules.ts";
import { Scheduler } from "../../src/samplers/scheduler.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import { Rng } from "../../src/tensor/rng.ts";
import { referenceModel } from "./fixtures.ts";

const xT = { data: new Rng(2).normal(2 * 3 * 4 * 4), shape: [2, 3, 4, 4] };

describe("config validation", () => {
  test("unknown keys are ignored; _class_name picks the class; { className } overrides it", () => {
    const s = Scheduler.fromConfig({
      _class_name: "DDIMScheduler",
      _diffusers_version: "0.8.0",
      skip_prk_steps: true,
    });
    assert.equal(s.className, "DDIMScheduler");
    const pndm = { _class_name: "PNDMScheduler", beta_schedule: "scaled_linear", steps_offset: 1 };
    assert.throws(
      () => Scheduler.fromConfig(pndm),
      /unsupported scheduler _class_name "PNDMScheduler"; supported: DDPMScheduler/,
    );
    assert.equal(
      Scheduler.fromConfig(pndm, { className: "EulerDiscreteScheduler" }).className,
      "EulerDiscreteScheduler",
    );
    assert.throws(() => Scheduler.fromConfig([]), /expects a scheduler_config.json object/);
  });

  test("bad values are rejected, naming the key, the value and what is allowed", () => {
    const bad: [Record<string, unknown>, RegExp][] = [
      [
        { _class_name: "DDIMScheduler", beta_schedule: "cosine" },
        /"beta_schedule" must be one of linear, scaled_linear, squaredcos_cap_v2, got "cosine"/,
      ],
      [
        { _class_name: "DDIMScheduler", num_train_timesteps: 0 },
        /"num_train_timesteps" must be an integer >= 1 and <= 100000, got 0/,
      ],
      [{ _class_name: "DDIMScheduler", clip_sample: "yes" }, /"clip_sample" must be true or false/],
      [
        { _class_name: "DDIMScheduler", prediction_type: "flow_prediction" },
        /"prediction_type" must be one of epsilon, sample, v_prediction/,
      ],
      [{ _class_name: "DDIMScheduler", timestep_spacing: null }, /"timestep_spacing" must be one of/],
      [
        { _class_name: "DDPMScheduler", variance_type: "fixed_large_log" },
        /"variance_type" must be not "fixed_large_log" .* use "fixed_large"/,
      ],
      [
        { _class_name: "DDPMScheduler", trained_betas: [0.1, 0.2] },
        /"trained_betas" must be an array of num_train_timesteps \(1000\) betas/,
      ],
      [
        { _class_name: "EulerDiscreteScheduler", use_karras_sigmas: true, use_beta_sigmas: true },
        /only one of use_karras_sigmas, use_beta_sigmas/,
      ],
      [
        { _class_name: "EulerAncestralDiscreteScheduler", prediction_type: "sample" },
        /"prediction_type" must be one of epsilon, v_prediction/,
      ],
      [
        { _class_name: "DPMSolverMultistepScheduler", algorithm_type: "dpmsolver" },
        /"final_sigmas_type" must be "sigma_min" with algorithm_type dpmsolver/,
      ],
      [
        { _class_name: "DPMSolverMultistepScheduler", algorithm_type: "sde-dpmsolver++", solver_order: 3 },
        /"solver_order" must be 1 or 2/,
      ],
      [{ _class_name: "DPMSolverMultistepScheduler", solver_order: 4 }, /"solver_order" must be 1, 2 or 3/],
      [
        { _class_name: "DPMSolverMultistepScheduler", use_dynamic_shifting: true },
        /use_dynamic_shifting=true needs .* mu/,
      ],
      [
        { _class_name: "DPMSolverMultistepScheduler", prediction_type: "flow_prediction" },
        /"prediction_type" must be not flow_prediction without use_flow_sigmas/,
      ],
      [
        { _class_name: "FlowMatchEulerDiscreteScheduler", use_dynamic_shifting: true },
        /set use_dynamic_shifting=false/,
      ],
      [{ _class_name: "FlowMatchEulerDiscreteScheduler", shift: -1 }, /"shift" must be a number > 0/],
      [
        { _class_name: "LCMScheduler", original_inference_steps: 2.5 },
        /"original_inference_steps" must be an integer/,
      ],
    ];
    for (const [config, message] of bad)
      assert.throws(() => Scheduler.fromConfig(config), message, JSON.stringify(config));
  });

  test("step counts the config cannot serve are rejected", () => {
    assert.throws(
      () => Scheduler.fromConfig({ _class_name: "DDIMScheduler" }).timesteps(1001),
      /cannot exceed/,
    );
    assert.throws(
      () => Scheduler.fromConfig({ _class_name: "EulerDiscreteScheduler" }).timesteps(0),
      /positive integer/,
    );
    assert.throws(
      () => Scheduler.fromConfig({ _class_name: "LCMScheduler" }).timesteps(51),
      /original_inference_steps \(50\)/,
    );
    const offset = Scheduler.fromConfig({ _class_name: "DDIMScheduler", steps_offset: 1 });
    assert.throws(() => offset.timesteps(1000), /timestep 1000 is outside 0..999/);
  });

  test("aliases diffusers maps: deis → dpmsolver++, logrho → midpoint, original_sample → sample; -inf as a string", () => {
    const s = Scheduler.fromConfig({
      _class_name: "DPMSolverMultistepScheduler",
      algorithm_type: "deis",
      solver_type: "logrho",
      lambda_min_clipped: "-inf",
    });
    assert.equal(
      s.config.className === "DPMSolverMultistepScheduler" && s.config.algorithmType,
      "dpmsolver++",
    );
    const e = Scheduler.fromConfig({
      _class_name: "EulerDiscreteScheduler",
      prediction_type: "original_sample",
    });
    assert.equal(e.config.className === "EulerDiscreteScheduler" && e.config.predictionType, "sample");
  });
});

describe("config keys beyond the reference vectors", () => {
  test("DDIM: set_alpha_to_one=false ends on ᾱ_0; zero-SNR rescaling makes ᾱ_T = 0", () => {
    const s = Scheduler.fromConfig({
      _class_name: "DDIMScheduler",
      set_alpha_to_one: false,
      steps_offset: 1,
    });
    const plan = s.plan(10);
    assert.ok("steps" in plan);
    assert.equal(plan.steps.at(-1)!.alphaBarPrev, s.alphasCumprod![0]);
    const z = Scheduler.fromConfig({
      _class_name: "DDIMScheduler",
      rescale_betas_zero_snr: true,
      timestep_spacing: "trailing",
    });
    assert.equal(z.alphasCumprod![999], 0);
    assert.equal(z.timesteps(10)[0], 999);
  });

  test("Euler: zero-SNR keeps σ_max finite (ᾱ_T = 2⁻²⁴); final_sigmas_type, sigma_min/max, continuous timesteps", () => {
    const z = Scheduler.fromConfig({ _class_name: "EulerDiscreteScheduler", rescale_betas_zero_snr: true });
    assert.equal(z.alphasCumprod![999], 2 ** -24);
    assert.ok(Math.abs(z.sigmas(10)![0]! - 4096) < 1e-3);
    const m = Scheduler.fromConfig({ _class_name: "EulerDiscreteScheduler", final_sigmas_type: "sigma_min" });
    assert.equal(m.sigmas(10)!.at(-1), karrasSigmasFromAlphaBar(m.alphasCumprod!)[0]);
    const k = Scheduler.fromConfig({
      _class_name: "EulerDiscreteScheduler",
      use_karras_sigmas: true,
      sigma_min: 0.1,
      sigma_max: 10,
    });
    const ks = k.sigmas(5)!;
    assert.ok(Math.abs(ks[0]! - 10) < 1e-5 && Math.abs(ks[4]! - 0.1) < 1e-7 && ks[5] === 0);
    const c = Scheduler.fromConfig({
      _class_name: "EulerDiscreteScheduler",
      timestep_type: "continuous",
      prediction_type: "v_prediction",
    });
    const sig = c.sigmas(4)!;
    for (const [i, t] of c.timesteps(4).entries()) assert.equal(t, Math.fround(0.25 * Math.log(sig[i]!)));
    const ll = Scheduler.fromConfig({
      _class_name: "EulerDiscreteScheduler",
      interpolation_type: "log_linear",
    });
    const ls = ll.sigmas(4)!;
    assert.equal(ls.length, 5);
    assert.ok(Math.abs(ls[0]! - 157.4072) < 1e-3 && Math.abs(ls[4]! - 0.0100013) < 1e-6, `${ls}`);
  });

  test("exponential and beta sigmas span the interpolated range", () => {
    for (const flag of ["use_exponential_sigmas", "use_beta_sigmas"]) {
      for (const cls of ["EulerDiscreteScheduler", "HeunDiscreteScheduler", "DPMSolverMultistepScheduler"]) {
        const s = Scheduler.fromConfig({ _class_name: cls, [flag]: true });
        const sig = s.sigmas(8)!;
        const max = karrasSigmasFromAlphaBar(s.alphasCumprod!)[999]!;
        assert.ok(Math.abs(sig[0]! / max - 1) < 1e-6, `${cls} ${flag}: ${sig[0]} vs ${max}`);
        for (let i = 1; i < sig.length; i++) assert.ok(sig[i]! < sig[i - 1]!, `${cls} ${flag} decreasing`);
      }
    }
  });

  test("flow matching: shift 3 shifts the smallest sigma twice; shift_terminal, invert_sigmas", () => {
    const s = Scheduler.fromConfig({ _class_name: "FlowMatchEulerDiscreteScheduler", shift: 3 });
    const sig = s.sigmas(10)!;
    assert.ok(Math.abs(sig[9]! - 0.0089286) < 1e-7, `${sig[9]}`);
    assert.equal(sig[0], 1);
    const term = Scheduler.fromConfig({
      _class_name: "FlowMatchEulerDiscreteScheduler",
      shift: 3,
      shift_terminal: 0.1,
    });
    assert.ok(Math.abs(term.sigmas(10)![9]! - 0.1) < 1e-6);
    const inv = Scheduler.fromConfig({ _class_name: "FlowMatchEulerDiscreteScheduler", invert_sigmas: true });
    const is = inv.sigmas(5)!;
    assert.equal(is[0], 0);
    assert.equal(is[5], 1);
  });

  test("DPM-Solver: lambda_min_clipped clips the cosine schedule's last timesteps; flow sigmas; sigma_min final", () => {
    const cos = { _class_name: "DPMSolverMultistepScheduler", beta_schedule: "squaredcos_cap_v2" };
    const clipped = Scheduler.fromConfig({ ...cos, lambda_min_clipped: -5.1 }).timesteps(10);
    const full = Scheduler.fromConfig(cos).timesteps(10);
    assert.equal(full[0], 999);
    assert.ok(clipped[0]! < 999, `${clipped[0]}`);
    const f = Scheduler.fromConfig({
      _class_name: "DPMSolverMultistepScheduler",
      use_flow_sigmas: true,
      prediction_type: "flow_prediction",
      flow_shift: 3,
    });
    assert.ok(f.sigmas(10)![0]! > 0.99);
    const m = Scheduler.fromConfig({
      _class_name: "DPMSolverMultistepScheduler",
      final_sigmas_type: "sigma_min",
    });
    assert.ok(m.sigmas(10)!.at(-1)! > 0);
  });

  test("noise is drawn where diffusers draws it: DDPM skips t = 0, SDE-DPM-Solver++ every step, LCM all but the last", async () => {
    const count = async (config: Record<string, unknown>, steps: number) => {
      let n = 0;
      const noise = (shape: readonly number[]) => {
        n++;
        return new Float32Array(shape.reduce((a, b) => a * b, 1));
      };
      await Scheduler.fromConfig(config).sample(referenceModel, xT, { steps, noise });
      return n;
    };
    assert.equal(await count({ _class_name: "DDPMScheduler" }, 10), 9);
    assert.equal(await count({ _class_name: "DDPMScheduler", steps_offset: 1 }, 10), 10);
    assert.equal(
      await count({ _class_name: "DPMSolverMultistepScheduler", algorithm_type: "sde-dpmsolver++" }, 7),
      7,
    );
    assert.equal(await count({ _class_name: "LCMScheduler" }, 4), 3);
    assert.equal(await count({ _class_name: "EulerDiscreteScheduler" }, 5), 0);
    assert.equal(await count({ _class_name: "DDIMScheduler" }, 5), 0);
    const eta = async () => {
      let n = 0;
      await Scheduler.fromConfig({ _class_name: "DDIMScheduler" }).sample(referenceModel, xT, {
        steps: 5,
        eta: 0.5,
        noise: (shape) => {
          n++;
          return new Float32Array(shape.reduce((a, b) => a * b, 1));
        },
      });
      return n;
    };
    assert.equal(await eta(), 5);
  });

  test("DDPM with a learned variance reads the network's extra channels; other variance types run", async () => {
    const net = (x: HostTensor, t: number) => {
      const eps = referenceModel(x, t);
      const out = new Float32Array(x.size * 2);
      const [n = 1, c = 1] = x.shape;
      const per = x.size / n;
      for (let b = 0; b < n; b++) {
        out.set(eps.data.subarray(b * per, (b + 1) * per), b * 2 * per);
        out.fill(0.5, b * 2 * per + per, (b + 1) * 2 * per);
      }
      return new HostTensor(out, [n, 2 * c, ...x.shape.slice(2)]);
    };
    for (const variance_type of ["learned", "learned_range"]) {
      const x = await Scheduler.fromConfig({ _class_name: "DDPMScheduler", variance_type }).sample(net, xT, {
        steps: 5,
      });
      assert.ok(x.data.every(Number.isFinite), variance_type);
    }
    for (const variance_type of ["fixed_small_log", "fixed_large"]) {
      const x = await Scheduler.fromConfig({ _class_name: "DDPMScheduler", variance_type }).sample(
        referenceModel,
        xT,
        { steps: 5 },
      );
      assert.ok(x.data.every(Number.isFinite), variance_type);
    }
  });

  test("thresholding and clip_sample bound x̂0; async models and {data, shape} inputs are accepted", async () => {
    const big = async (x: HostTensor) => HostTensor.full(x.shape, -50);
    for (const config of [
      { _class_name: "DDIMScheduler", clip_sample: true, prediction_type: "sample" },
      { _class_name: "DDPMScheduler", thresholding: true, prediction_type: "sample", sample_max_value: 2 },
      { _class_name: "HeunDiscreteScheduler", clip_sample: true, prediction_type: "sample" },
      {
        _class_name: "DPMSolverMultistepScheduler",
        thresholding: true,
        prediction_type: "sample",
        sample_max_value: 2,
      },
    ]) {
      const seen: number[] = [];
      await Scheduler.fromConfig(config).sample(big, xT, {
        steps: 4,
        onStep: ({ x0 }) => void seen.push(Math.min(...x0.data)),
      });
      assert.ok(Math.min(...seen) >= -1.0000001, `${config._class_name}: ${Math.min(...seen)}`);
    }
    // LCM reports its boundary-condition output c_skip·x + c_out·x̂0; clipping x̂0 changes it.
    const lcm = (clip_sample: boolean) =>
      Scheduler.fromConfig({ _class_name: "LCMScheduler", clip_sample, prediction_type: "sample" }).sample(
        big,
        xT,
        {
          steps: 2,
        },
      );
    assert.ok(Math.min(...(await lcm(true)).data) > -1.01);
    assert.ok(Math.min(...(await lcm(false)).data) < -49);
  });
});
