/**
 * Activations kept blocked between convolutions in forward-only graphs (src/onnx/nchwc-layout.ts):
 * which reorders go, that the rewritten graph computes what the plain one computes, and that graphs
 * with a backward pass are left alone.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { afterEach, test } from "node:test";
import { resolveUNetConfig } from "../../src/models/unet/index.ts";
import { unet2d } from "../../src/models/unet/unet.ts";
import * as nn from "../../src/nn/index.ts";
import { toOnnx } from "../../src/onnx/emit.ts";
import { compileGraph } from "../../src/runtime/compile.ts";
import { nchwcBlockSize } from "../../src/runtime/session.ts";
import { grad } from "../../src/tensor/autodiff.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import * as o from "../../src/tensor/ops.ts";
import { init, ParamScope } from "../../src/tensor/params.ts";
import { Graph, type Tensor } from "../../src/tensor/symbolic.ts";
import { assertAllclose } from "../support/allclose.ts";
import { TestRng } from "../support/check.ts";

const saved = process.env["DIFFUSE_NCHWC"];
afterEach(() => {
  if (saved === undefined) delete process.env["DIFFUSE_NCHWC"];
  else process.env["DIFFUSE_NCHWC"] = saved;
});

const kinds = (
  g: Graph,
  outputs: Record<string, Tensor>,
  opts: { nchwcBlock: number; keepBlocked?: boolean },
) =>
  toOnnx(g, outputs, {
    passes: { nchwc: opts.nchwcBlock, keepBlocked: opts.keepBlocked ?? "inference" },
  }).graph.nodes.map((n) => `${n.domain ? "nchwc:" : ""}${n.opType}`);
const count = (ks: string[], k: string) => ks.filter((q) => q === k).length;

/**
 * A small net with every rewritten pattern: a first conv of 3 channels (plain input), a per-sample
 * add (a time embedding), group norms (2 and 8 channels per group) + SiLU, a residual add into a
 * convolution, a concatenation on channels, nearest upsampling, a per-channel scale, an attention-like
 * reshape that needs the plain layout, and a last conv of 3 channels (padded filters).
 */
function net(g: Graph, x: Tensor, emb: Tensor): Tensor {
  const p = ParamScope.root(g);
  const conv = (name: string, h: Tensor, c: number, o_: number, k = 3) =>
    o.conv2d(
      h,
      p.param(`${name}.w`, [o_, c, k, k], init.normal(0.2)),
      p.param(`${name}.b`, [o_], init.normal(0.1)),
      {
        padding: (k - 1) / 2,
      },
    );
  const h0 = conv("conv_in", x, 3, 16);
  const n1 = o.silu(nn.groupNorm(p.sub("n1"), h0, 8));
  const h1 = o.add(conv("c1", n1, 16, 16), o.reshape(emb, [2, 16, 1, 1]));
  const n2 = o.silu(nn.groupNorm(p.sub("n2"), h1, 2));
  const h2 = o.add(h0, conv("c2", n2, 16, 16));
  const cat = o.concat([h2, h0], 1);
  const up = o.upsampleNearest(cat, 2);
  const scaled = o.mul(up, o.reshape(p.param("scale", [32], init.normal(1)), [1, 32, 1, 1]));
  const h3 = conv("c3", scaled, 32, 16, 1);
  // attention-like: tokens [N, H·W, C] in the plain layout, back to [N, C, H, W]
  const tokens = o.transpose(o.reshape(h3, [2, 16, 64]), [0, 2, 1]);
  const back = o.reshape(o.transpose(o.tanh(tokens), [0, 2, 1]), [2, 16, 8, 8]);
  const h4 = o.add(h3, back);
  return conv("conv_out", o.silu(h4), 16, 3);
}

function netGraph() {
  const g = new Graph();
  const x = g.input("x", [2, 3, 4, 4]);
  const emb = g.input("emb", [2, 16]);
  const y = net(g, x, emb);
  return { g, y };
}

test("a forward graph keeps activations blocked: reorders only where the plain layout is needed", () => {
  const { g, y } = netGraph();
  const kept = kinds(g, { y }, { nchwcBlock: 8 });
  const each = kinds(g, { y }, { nchwcBlock: 8, keepBlocked: false });
  const reorders = (ks: string[]) => count(ks, "nchwc:ReorderInput") + count(ks, "nchwc:ReorderOutput");
  // without the pass every blocked conv reorders its input and output
  assert.ok(reorders(each) >= 9, `${reorders(each)}`);
  // with it: out to plain for the attention-like part and back, and the last conv's output
  assert.equal(count(kept, "nchwc:ReorderInput"), 1, kept.join(" "));
  assert.equal(count(kept, "nchwc:ReorderOutput"), 2, kept.join(" "));
  // five convolutions, one with the residual add as its Sum input; the two group norms' and the
  // per-channel scale's affines as depthwise convolutions, and each group norm's sums of squares as
  // one (the tensor with itself); the time-embedding add folded into the second group norm's
  // statistics and shift (no convolution of its own)
  assert.equal(count(kept, "nchwc:Conv"), 5 + 3 + 2, kept.join(" "));
  const convs = toOnnx(g, { y }, { passes: { nchwc: 8 } }).graph.nodes.filter(
    (n) => n.domain && n.opType === "Conv",
  );
  assert.equal(convs.filter((n) => n.inputs.length === 4).length, 1);
  assert.equal(count(kept, "BatchNormalization"), 0);
  assert.equal(count(kept, "nchwc:Upsample"), 1);
  assert.equal(count(kept, "Resize"), 0);
});

test("the blocked forward computes the plain one (a large time embedding included)", async () => {
  if ((await nchwcBlockSize()) === 0) return; // no NCHWc kernels on this CPU: nothing to compare
  const rng = TestRng.fromName("nchwc layout");
  const { g, y } = netGraph();
  for (const offset of [0, 4]) {
    const feeds: Record<string, HostTensor> = {};
    for (const t of g.inputs) {
      const n = t.shape.reduce((p, q) => p * q, 1);
      const shift = t.inputName === "x" ? 1 : t.inputName === "emb" ? offset : 0;
      feeds[t.inputName!] = new HostTensor(
        Float32Array.from({ length: n }, () => rng.normal() * 0.5 + shift),
        [...t.shape],
      );
    }
    const run = async () => (await compileGraph(g, { y }, { threads: 1, cache: false })).run(feeds);
    delete process.env["DIFFUSE_NCHWC"];
    const blocked = await run();
    process.env["DIFFUSE_NCHWC"] = "0";
    const plain = await run();
    assertAllclose(blocked["y"]!, plain["y"]!, { what: `y (offset ${offset})`, rtol: 1e-4, atol: 1e-4 });
  }
});

test("graphs with a backward pass, and graph outputs, stay in the plain layout", () => {
  const { g, y } = netGraph();
  const params = g.inputs.filter((t) => t.inputName !== "x" && t.inputName !== "emb");
  const loss = o.mean(o.square(y));
  const grads = grad(loss, params);
  const outputs = { loss, ...Object.fromEntries(grads.map((d, i) => [`d${i}`, d])) };
  const ks = kinds(g, outputs, { nchwcBlock: 8 });
  // every blocked conv still reorders on both sides: nothing was rewritten
  assert.equal(count(ks, "nchwc:ReorderOutput"), count(ks, "nchwc:Conv"));
  assert.equal(count(ks, "Resize"), 1);
  // an output of the graph between two convs is written plain (the user reads it)
  const h = new Graph();
  const x = h.input("x", [2, 8, 4, 4]);
  const w = h.input("w", [8, 8, 3, 3]);
  const mid = o.silu(o.conv2d(x, w, undefined, { padding: 1 }));
  const out = o.conv2d(mid, w, undefined, { padding: 1 });
  const m = toOnnx(h, { mid, out }, { passes: { nchwc: 8 } });
  const midNode = m.graph.nodes.find((n) => n.outputs.includes("mid"));
  assert.equal(midNode?.opType, "Mul");
});

test("the MNIST U-Net's sampling graph reorders only around its attention blocks", () => {
  const cfg = resolveUNetConfig(
    JSON.parse(readFileSync(new URL("../fixtures/unet-configs/unet-mnist.json", import.meta.url), "utf8")),
  );
  const g = new Graph();
  const y = unet2d(
    ParamScope.root(g),
    cfg,
    g.input("x", [2, 1, 32, 32]),
    g.input("t", [2]),
    g.input("labels", [2], "int64"),
  );
  const ks = kinds(g, { y }, { nchwcBlock: 8 });
  const attention = count(ks, "Softmax");
  assert.equal(attention, 6);
  // per attention block: its queries, keys and values out of the blocked layout (the 1×1 projections
  // run blocked), the heads' output back in; and the last conv's 1 output channel
  assert.equal(count(ks, "nchwc:ReorderInput"), attention);
  assert.equal(count(ks, "nchwc:ReorderOutput"), 3 * attention + 1);
  assert.equal(count(ks, "BatchNormalization"), 0);
});
