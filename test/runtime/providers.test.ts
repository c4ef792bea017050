import assert from "node:assert/strict";
import { afterEach, describe, it, test } from "node:test";
import { compile, compileGraph } from "../../src/runtime/compile.ts";
import { defaultExecutionProviders } from "../../src/runtime/options.ts";
import { downloadAll } from "../../src/runtime/session.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import * as o from "../../src/tensor/ops.ts";
import { Graph } from "../../src/tensor/symbolic.ts";

describe("execution providers (DIFFUSE_EP)", () => {
  const saved = process.env["DIFFUSE_EP"];
  afterEach(() => {
    if (saved === undefined) delete process.env["DIFFUSE_EP"];
    else process.env["DIFFUSE_EP"] = saved;
  });

  it("defaults to the CPU", () => {
    delete process.env["DIFFUSE_EP"];
    assert.deepEqual(defaultExecutionProviders(), ["cpu"]);
    process.env["DIFFUSE_EP"] = " ";
    assert.deepEqual(defaultExecutionProviders(), ["cpu"]);
  });

  it("keeps the order given, drops repeats and appends the CPU as the fallback", () => {
    process.env["DIFFUSE_EP"] = "WebGPU, webgpu";
    assert.deepEqual(defaultExecutionProviders(), ["webgpu", "cpu"]);
    process.env["DIFFUSE_EP"] = "cpu,cuda";
    assert.deepEqual(defaultExecutionProviders(), ["cpu", "cuda"]);
  });

  it("names an unknown provider and the ones it knows", () => {
    process.env["DIFFUSE_EP"] = "webgpu,metal";
    assert.throws(() => defaultExecutionProviders(), /unknown execution provider "metal".*cpu, cuda, webgpu/);
  });

  it("a bad DIFFUSE_EP stops compilation before any session opens", async () => {
    process.env["DIFFUSE_EP"] = "gpu";
    await assert.rejects(
      compile({ x: { shape: [3] } }, ({ x }) => ({ y: o.mul(x, x) })),
      /DIFFUSE_EP names an unknown execution provider "gpu"/,
    );
  });
});

test("deviceOutputs only apply on a WebGPU provider: on the CPU the outputs come back to the host", async () => {
  const g = new Graph();
  const x = g.input("x", [2]);
  const c = await compileGraph(g, { y: o.mul(x, 3) }, { executionProviders: ["cpu"], deviceOutputs: ["y"] });
  assert.equal(c.onDevice.size, 0);
  const r = await c.runOnDevice({ x: new HostTensor(Float32Array.of(1, 2), [2]) });
  assert.deepEqual(Object.keys(r.device), []);
  assert.deepEqual([...r.host["y"]!.data], [3, 6]);
  assert.deepEqual(await downloadAll({}), {});
});
