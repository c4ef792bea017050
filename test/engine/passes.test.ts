/**
 * The named passes (src/onnx/passes/options.ts, src/tensor/backward.ts) are opt-in rewrites: each can
 * be switched off on its own, or all together, and the graph still computes the same values; a pass
 * switched off leaves its mark out of the emitted graph. Also: the engine's modules import no cycle.
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { test } from "node:test";
import { toOnnx } from "../../src/onnx/emit.ts";
import { defaultPasses, type EmitPasses, NO_PASSES } from "../../src/onnx/passes/options.ts";
import { evaluate } from "../../src/runtime/compile.ts";
import { DEFAULT_BACKWARD_PASSES, grad } from "../../src/tensor/autodiff.ts";
import type { BackwardPass } from "../../src/tensor/backward.ts";
import { fuseGroupNormGrad } from "../../src/tensor/grad-fusions.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import * as o from "../../src/tensor/ops.ts";
import { recompute } from "../../src/tensor/recompute.ts";
import { Graph, type Tensor } from "../../src/tensor/symbolic.ts";
import { assertAllclose } from "../support/allclose.ts";
import { TestRng } from "../support/check.ts";

const SHAPES: Record<string, readonly number[]> = {
  x: [4, 8, 8, 8],
  w1: [16, 8, 3, 3],
  gn_w: [16],
  gn_b: [16],
  w2: [8, 16, 3, 3],
  r: [4, 8, 16, 16],
};

function feeds(): Record<string, HostTensor> {
  const rng = TestRng.fromName("passes");
  return Object.fromEntries(
    Object.entries(SHAPES).map(([k, s]) => [
      k,
      new HostTensor(
        Float32Array.from({ length: s.reduce((p, q) => p * q, 1) }, () => rng.normal() * 0.5),
        s,
      ),
    ]),
  );
}

/** conv → group norm + affine → SiLU → nearest ×2 → conv: every pattern a pass rewrites. */
function net(t: Record<string, Tensor>): Tensor {
  const h = o.conv2d(t["x"]!, t["w1"]!, undefined, { padding: 1 }); // [4, 16, 8, 8]
  const s = o.reshape(o.standardize(o.reshape(h, [4, 4, -1]), 2, 1e-5), h.shape);
  const a = o.add(o.mul(s, o.reshape(t["gn_w"]!, [1, 16, 1, 1])), o.reshape(t["gn_b"]!, [1, 16, 1, 1]));
  const up = o.upsampleNearest(o.silu(a), 2); // [4, 16, 16, 16]
  return o.conv2d(up, t["w2"]!, undefined, { padding: 1 }); // [4, 8, 16, 16]
}

const PARAMS = ["x", "w1", "gn_w", "gn_b", "w2"];

/** The forward, and the gradients of Σ y ⊙ r with the given backward passes. */
function outputs(t: Record<string, Tensor>, passes?: readonly BackwardPass[]): Record<string, Tensor> {
  const y = net(t);
  const loss = o.sum(o.mul(y, t["r"]!));
  const gs = grad(
    loss,
    PARAMS.map((k) => t[k]!),
    undefined,
    passes ? { passes } : {},
  );
  return { y, ...Object.fromEntries(PARAMS.map((k, i) => [`d_${k}`, gs[i]!])) };
}

async function run(emit: Partial<EmitPasses>, backward?: readonly BackwardPass[], forwardOnly = false) {
  return evaluate(feeds(), (t) => (forwardOnly ? { y: net(t) } : outputs(t, backward)), {
    threads: 1,
    passes: emit,
  });
}

function same(got: Record<string, HostTensor>, want: Record<string, HostTensor>, what: string): void {
  assert.deepEqual(Object.keys(got).sort(), Object.keys(want).sort());
  for (const k of Object.keys(want))
    assertAllclose(got[k]!, want[k]!, { what: `${what}: ${k}`, rtol: 1e-4, atol: 1e-4 });
}

const EMIT_OFF: Record<string, Partial<EmitPasses>> = {
  nchwc: { nchwc: 0 },
  keepBlocked: { keepBlocked: false },
  convWeightGrad: { convWeightGrad: "im2col-matmul" },
  weightGradSlices: { weightGradSlices: false },
  fuseGroupNorm: { fuseGroupNorm: false },
  all: NO_PASSES,
};

test("each emission pass switched off, and all of them: the same values, forward and backward", async () => {
  const base = await run({});
  const baseForward = await run({}, undefined, true);
  for (const [name, off] of Object.entries(EMIT_OFF)) {
    same(await run(off), base, `${name} off (train graph)`);
    same(await run(off, undefined, true), baseForward, `${name} off (forward graph)`);
  }
});

test("each backward pass switched off, and both: the same gradients", async () => {
  const base = await run({});
  const cases: Record<string, readonly BackwardPass[]> = {
    "recompute only": [recompute],
    "fuse-groupnorm-grad only": [fuseGroupNormGrad],
    none: [],
  };
  for (const [name, passes] of Object.entries(cases)) same(await run({}, passes), base, name);
  assert.deepEqual(
    DEFAULT_BACKWARD_PASSES.map((p) => p.name),
    ["fuse-groupnorm-grad", "recompute"],
  );
});

/** The emitted node kinds of the net's forward or train graph. */
function kinds(emit: Partial<EmitPasses>, backward?: readonly BackwardPass[], forwardOnly = false): string[] {
  const g = new Graph();
  const t = Object.fromEntries(Object.entries(SHAPES).map(([k, s]) => [k, g.input(k, s)]));
  const outs = forwardOnly ? { y: net(t) } : outputs(t, backward);
  return toOnnx(g, outs, { passes: emit }).graph.nodes.map((n) => `${n.domain ? "nchwc:" : ""}${n.opType}`);
}

test("a pass switched off leaves its rewrite out of the graph", () => {
  const fwd = (emit: Partial<EmitPasses>) => kinds(emit, undefined, true);
  assert.ok(!fwd({}).includes("LayerNormalization"), "fused group norm by default (CPU)");
  assert.ok(fwd({ fuseGroupNorm: false }).includes("LayerNormalization"));
  assert.ok(fwd({ nchwc: 8 }).some((k) => k.startsWith("nchwc:")));
  assert.ok(!fwd({ nchwc: 0 }).some((k) => k.startsWith("nchwc:")));
  // kept blocked: the group norm's statistics run on blocked data (no plain ReorderOutput between)
  const reorders = (ks: string[]) => ks.filter((k) => k === "nchwc:ReorderOutput").length;
  assert.ok(reorders(fwd({ nchwc: 8 })) < reorders(fwd({ nchwc: 8, keepBlocked: false })));
  // recomputation pins its copies after a gradient with a Where; without it there is none
  const where = (ks: string[]) => ks.filter((k) => k === "Where").length;
  assert.ok(where(kinds({})) > 0);
  assert.equal(where(kinds({}, [fuseGroupNormGrad])), 0);
  // without the group-norm gradient fusion the backward graph is the node-by-node one
  assert.notDeepEqual(kinds({}, [recompute]), kinds({}, []));
  assert.deepEqual(defaultPasses("gpu").fuseGroupNorm, false);
});

/** Relative-import cycles among the files under `dir` (type-only imports count too). */
function importCycles(dir: string): string[][] {
  const files: string[] = [];
  const walk = (d: string): void => {
    for (const n of readdirSync(d)) {
      const p = join(d, n);
      if (statSync(p).isDirectory()) walk(p);
      else if (p.endsWith(".ts")) files.push(p);
    }
  };
  walk(dir);
  const deps = new Map<string, string[]>();
  for (const f of files) {
    const src = readFileSync(f, "utf8");
    const to = [...src.matchAll(/(?:import|export)\s[^;]*?from\s+"(\.{1,2}\/[^"]+\.ts)"/gs)].map((m) =>
      resolve(dirname(f), m[1]!),
    );
    deps.set(
      f,
      to.filter((d) => files.includes(d)),
    );
  }
  const cycles: string[][] = [];
  const state = new Map<string, "open" | "done">();
  const path: string[] = [];
  const visit = (f: string): void => {
    state.set(f, "open");
    path.push(f);
    for (const d of deps.get(f) ?? []) {
      if (state.get(d) === "open") cycles.push(path.slice(path.indexOf(d)).map((p) => relative(dir, p)));
      else if (!state.has(d)) visit(d);
    }
    path.pop();
    state.set(f, "done");
  };
  for (const f of files) if (!state.has(f)) visit(f);
  return cycles;
}

test("the engine's modules (tensor/, onnx/, runtime/) import no cycle", () => {
  const src = new URL("../../src/", import.meta.url).pathname;
  for (const part of ["tensor", "onnx", "runtime"]) {
    assert.deepEqual(importCycles(join(src, part)), [], `cycles under src/${part}`);
  }
});
