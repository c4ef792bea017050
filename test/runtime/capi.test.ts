import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, it } from "node:test";
import { compile, compileGraph } from "../../src/runtime/compile.ts";
import type { CompiledGraph } from "../../src/runtime/session.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import * as o from "../../src/tensor/ops.ts";
import { Graph, type Tensor } from "../../src/tensor/symbolic.ts";

/** A graph with every dtype among its outputs, a final reshape, a scalar and an input passed through. */
async function mixed(): Promise<CompiledGraph> {
  const g = new Graph();
  const x = g.input("x", [2, 3]);
  const i = g.input("i", [2], "int64");
  const m = g.input("m", [2, 3], "bool");
  return compileGraph(g, {
    y: o.reshape(o.mul(x, x), [3, 2]),
    s: o.sum(x),
    picked: o.gather(x, i, 1),
    i32: o.cast(i, "int32"),
    iOut: i,
    masked: o.where(m, x, o.neg(x)),
    nonzero: o.cast(i, "bool"),
  });
}

function feeds(offset = 0) {
  // x is a view into a larger buffer: the run must read from its byte offset
  const backing = new Float32Array(6 + offset);
  backing.set([1, -2, 3, 4.5, 5, -6], offset);
  return {
    x: new HostTensor(backing.subarray(offset), [2, 3]),
    i: new HostTensor(BigInt64Array.of(2n, 0n), [2]),
    m: new HostTensor(Uint8Array.of(1, 0, 1, 0, 0, 1), [2, 3]),
  };
}

function plain(r: Record<string, HostTensor>) {
  return Object.fromEntries(
    Object.entries(r).map(([k, t]) => [
      k,
      { dtype: t.dtype, shape: t.shape, data: Array.from(t.data as never) },
    ]),
  );
}

describe("ONNX Runtime's C API (CPU sessions)", () => {
  const saved = process.env["DIFFUSE_CAPI"];
  afterEach(() => {
    if (saved === undefined) delete process.env["DIFFUSE_CAPI"];
    else process.env["DIFFUSE_CAPI"] = saved;
  });

  it("opens CPU sessions through the C API, and through onnxruntime-node with DIFFUSE_CAPI=0", async () => {
    delete process.env["DIFFUSE_CAPI"];
    assert.equal((await mixed()).binding, "c-api");
    process.env["DIFFUSE_CAPI"] = "0";
    assert.equal((await mixed()).binding, "onnxruntime-node");
  });

  it("gives the same outputs as onnxruntime-node for every dtype, shape and input view", async () => {
    delete process.env["DIFFUSE_CAPI"];
    const viaC = plain(await (await mixed()).run(feeds(5)));
    process.env["DIFFUSE_CAPI"] = "0";
    const viaNode = plain(await (await mixed()).run(feeds(0)));
    assert.deepEqual(viaC, viaNode);
    assert.deepEqual(viaC["y"], { dtype: "float32", shape: [3, 2], data: [1, 4, 9, 20.25, 25, 36] });
    assert.deepEqual(viaC["s"], { dtype: "float32", shape: [], data: [5.5] });
    assert.deepEqual(viaC["picked"]!.data, [3, 1, -6, 4.5]);
    assert.deepEqual(viaC["iOut"], { dtype: "int64", shape: [2], data: [2n, 0n] });
    assert.deepEqual(viaC["i32"], { dtype: "int32", shape: [2], data: [2, 0] });
    assert.deepEqual(viaC["masked"]!.data, [1, 2, 3, -4.5, -5, -6]);
    assert.deepEqual(viaC["nonzero"], { dtype: "bool", shape: [2], data: [1, 0] });
  });

  it("runs only the outputs asked for, each in its own memory", async () => {
    delete process.env["DIFFUSE_CAPI"];
    const g = await mixed();
    const a = await g.run(feeds(), ["y", "s"]);
    assert.deepEqual(Object.keys(a).sort(), ["s", "y"]);
    const x2 = feeds();
    (x2.x.data as Float32Array).fill(2);
    const b = await g.run(x2, ["y"]);
    // a later run writes new memory: the earlier result is unchanged
    assert.deepEqual([...a["y"]!.data], [1, 4, 9, 20.25, 25, 36]);
    assert.deepEqual([...b["y"]!.data], [4, 4, 4, 4, 4, 4]);
    assert.notEqual(a["y"]!.data.buffer, b["y"]!.data.buffer);
  });

  it("handles empty tensors", async () => {
    delete process.env["DIFFUSE_CAPI"];
    const g = await compile({ x: { shape: [0, 3] } }, ({ x }) => ({ y: o.mul(x, 2), s: o.sum(x) }));
    assert.equal(g.binding, "c-api");
    const r = await g.run({ x: new HostTensor(new Float32Array(0), [0, 3]) });
    assert.deepEqual(r["y"]!.shape, [0, 3]);
    assert.equal(r["y"]!.data.length, 0);
    assert.deepEqual([...r["s"]!.data], [0]);
  });

  it("turns ONNX Runtime's failures into errors, and the session keeps working", async () => {
    delete process.env["DIFFUSE_CAPI"];
    const g = await compile({ x: { shape: [3] }, i: { shape: [2], dtype: "int64" } }, ({ x, i }) => ({
      y: o.gather(x, i, 0),
    }));
    const x = new HostTensor(Float32Array.of(1, 2, 3), [3]);
    await assert.rejects(
      g.run({ x, i: new HostTensor(BigInt64Array.of(0n, 7n), [2]) }),
      /out of data bounds/,
    );
    const r = await g.run({ x, i: new HostTensor(BigInt64Array.of(2n, 0n), [2]) });
    assert.deepEqual([...r["y"]!.data], [3, 1]);
  });

  it("sessions on the process's shared arena and on their own give the same outputs; DIFFUSE_ARENA is checked", async () => {
    delete process.env["DIFFUSE_CAPI"];
    const net = ({ x }: Record<string, Tensor>) => ({
      y: o.sum(o.tanh(o.matmul(x!, o.transpose(x!, [1, 0]))), [1]),
    });
    const x = new HostTensor(
      Float32Array.from({ length: 96 * 64 }, (_, i) => Math.sin(i)),
      [96, 64],
    );
    const [shared, own] = await Promise.all(
      (["shared", "own"] as const).map((arena) =>
        compile({ x: { shape: [96, 64] } }, net, { arena, cache: false }),
      ),
    );
    for (let k = 0; k < 3; k++)
      assert.deepEqual([...(await shared!.run({ x }))["y"]!.data], [...(await own!.run({ x }))["y"]!.data]);
    shared!.dispose();
    own!.dispose();
    process.env["DIFFUSE_ARENA"] = "big";
    try {
      await assert.rejects(
        compile({ x: { shape: [3] } }, ({ x: v }) => ({ y: o.mul(v!, v!) })),
        /DIFFUSE_ARENA must be shared or own, got "big"/,
      );
    } finally {
      delete process.env["DIFFUSE_ARENA"];
    }
  });

  it("writes an output into the caller's buffer when one of its dtype and size is given", async () => {
    delete process.env["DIFFUSE_CAPI"];
    const g = await mixed();
    const y = new Float32Array(6);
    const wrongSize = new Float32Array(5);
    const r = await g.runOnDevice(
      feeds(),
      ["y", "s"],
      new Map<string, Float32Array>([
        ["y", y],
        ["s", wrongSize],
      ]),
    );
    assert.equal(r.host["y"]!.data, y);
    assert.deepEqual([...y], [1, 4, 9, 20.25, 25, 36]);
    assert.notEqual(r.host["s"]!.data, wrongSize, "a buffer of another size is not used");
    assert.deepEqual([...wrongSize], [0, 0, 0, 0, 0]);
  });

  it("names a bad DIFFUSE_CAPI", async () => {
    process.env["DIFFUSE_CAPI"] = "yes";
    await assert.rejects(
      compile({ x: { shape: [3] } }, ({ x }) => ({ y: o.mul(x, x) })),
      /DIFFUSE_CAPI must be 0 or 1, got "yes"/,
    );
  });

  it("leaves output memory to the garbage collector: many large runs do not pile up", async () => {
    delete process.env["DIFFUSE_CAPI"];
    // 8 MiB out per run; 150 runs would be 1.2 GiB if nothing were reclaimed
    const g = await compile({ x: { shape: [1] } }, ({ x }) => ({ y: o.expand(x, [2 * 1024 * 1024]) }));
    const x = new HostTensor(Float32Array.of(0.5), [1]);
    const before = process.memoryUsage().rss;
    for (let k = 0; k < 150; k++) {
      const r = await g.run({ x });
      assert.equal(r["y"]!.data[2 * 1024 * 1024 - 1], 0.5);
    }
    const grown = (process.memoryUsage().rss - before) / 2 ** 20;
    assert.ok(grown < 400, `RSS grew ${grown.toFixed(0)} MiB over 150 runs of an 8 MiB output`);
  });
});

describe("profiles (SessionOptions.profile, DIFFUSE_PROFILE)", () => {
  it("writes ONNX Runtime's per-node profile when the graph is disposed, and profile-summary reads it", async () => {
    const dir = mkdtempSync(join(tmpdir(), "diffuse-profile-"));
    try {
      const g = new Graph();
      const x = g.input("x", [64, 64]);
      const graph = await compileGraph(g, { y: o.matmul(o.tanh(x), x) }, { profile: join(dir, "p") });
      const x0 = new HostTensor(new Float32Array(64 * 64).fill(0.5), [64, 64]);
      for (let i = 0; i < 3; i++) await graph.run({ x: x0 });
      graph.dispose();
      const files = readdirSync(dir).filter((f) => f.startsWith("p") && f.endsWith(".json"));
      assert.equal(files.length, 1, `one profile file, got ${files.join(", ")}`);
      const events = JSON.parse(readFileSync(join(dir, files[0]!), "utf8")) as {
        cat: string;
        name: string;
      }[];
      assert.equal(events.filter((e) => e.cat === "Session" && e.name === "model_run").length, 3);
      const r = spawnSync(
        process.execPath,
        ["--import", "tsx", "scripts/profile-summary.ts", join(dir, files[0]!), "--skip", "1"],
        { encoding: "utf8" },
      );
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /2 runs \(1 skipped\)/);
      assert.match(r.stdout, /^(MatMul|FusedMatMul|Gemm)\s/m);
      assert.match(r.stdout, /^Tanh\s/m);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
