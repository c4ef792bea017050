/**
 * transformers' CLIPTextModel / CLIPTextModelWithProjection: parity with the clip-text-a fixture (a tiny
 * transformers 4.45 checkpoint, its inputs and outputs), the weight names and order, the pooling rule
 * (host helper and in-graph), the projection head and the gelu / first-eos path against a float64
 * host implementation written from the paper's equations, the save → load round trip (F32, F16, a
 * pipeline folder, old checkpoints), clear errors, and gradients (autodiff against finite differences).
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { readSafetensors, writeSafetensors } from "../../src/io/safetensors.ts";
import { clipTextForward, clipTextParamSpecs, poolPositions } from "../../src/models/text/clip-text.ts";
import { type ClipTextConfig, clipTextConfig } from "../../src/models/text/clip-text-config.ts";
import { CLIPTextModel, CLIPTextModelWithProjection } from "../../src/models/text/clip-text-model.ts";
import { compile, compileGraph } from "../../src/runtime/compile.ts";
import { grad } from "../../src/tensor/autodiff.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import * as o from "../../src/tensor/ops.ts";
import { ParamScope, type Params } from "../../src/tensor/params.ts";
import { Rng } from "../../src/tensor/rng.ts";
import { Graph } from "../../src/tensor/symbolic.ts";
import { maxRel } from "../support/allclose.ts";
import { erf, refEvaluator, refTensor } from "../support/ref.ts";

const FIX = "test/fixtures/clip-text-a";
const MODEL = join(FIX, "model");
const tmp = mkdtempSync(join(tmpdir(), "diffuse-clip-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const fixtureModel = CLIPTextModel.fromPretrained(MODEL, { session: { threads: 1 } });
const inputs = readSafetensors(join(FIX, "inputs.safetensors")).tensors;
const outputs = readSafetensors(join(FIX, "outputs.safetensors")).tensors;
const ids = (call: string) => inputs.get(`${call}.input_ids`) as HostTensor<"int64">;
const f32 = (t: HostTensor | undefined) => t!.data as Float32Array;

function close(what: string, a: HostTensor, ref: HostTensor, tol = 1e-4): number {
  assert.deepEqual(a.shape, ref.shape, `${what}: shape`);
  const rel = maxRel(f32(a), f32(ref));
  assert.ok(rel <= tol, `${what}: max|a−b|/max|ref| = ${rel}`);
  return rel;
}

for (const call of ["call0", "call1", "call2"]) {
  test(`clip-text: ${call} reproduces transformers within 1e-4 (last, pooled, penultimate)`, async (t) => {
    const te = await fixtureModel;
    const mask = inputs.get(`${call}.attention_mask`);
    const r = await te.forward(ids(call), {
      outputHiddenStates: true,
      ...(mask ? { attentionMask: mask } : {}),
    });
    const rels = [
      close("last_hidden_state", r.lastHiddenState, outputs.get(`${call}.last_hidden_state`)!),
      close("pooler_output", r.poolerOutput, outputs.get(`${call}.pooler_output`)!),
      close("penultimate", r.hiddenStates!.at(-2)!, outputs.get(`${call}.penultimate_hidden_state`)!),
    ];
    assert.equal(r.hiddenStates!.length, 3);
    t.diagnostic(`max|a−b|/max|ref| = ${rels.map((x) => x.toExponential(2)).join(", ")}`);
  });
}

test("clip-text: the embeddings and the plain call (no hidden states) agree with the fixture", async () => {
  const te = await fixtureModel;
  const inter = readSafetensors(join(FIX, "intermediates.safetensors")).tensors;
  const r = await te.forward(ids("call1"), { outputHiddenStates: true });
  close("embeddings", r.hiddenStates![0]!, inter.get("call1.text_model.embeddings.out")!);
  const plain = await te.forward(ids("call1"));
  assert.equal(plain.hiddenStates, undefined);
  // another graph (no hidden-state outputs): ONNX Runtime may fuse differently, so not bit-equal
  close("pooled without hidden states", plain.poolerOutput, r.poolerOutput, 1e-6);
});

test("clip-text: weight names, order and shapes equal transformers' state dict", async () => {
  const te = await fixtureModel;
  const keys = readFileSync(join(FIX, "weight_keys.txt"), "utf8")
    .trim()
    .split("\n")
    .map((l) => l.split("\t"));
  assert.deepEqual(
    te.specs.map((s) => s.name),
    keys.map((k) => k[0]),
  );
  assert.deepEqual(
    te.specs.map((s) => JSON.stringify(s.shape)),
    keys.map((k) => JSON.stringify(JSON.parse(k[2]!))),
  );
  assert.equal(te.numParams, 49536);
  const proj = clipTextParamSpecs(te.typedConfig, { projection: true }).at(-1)!;
  assert.deepEqual([proj.name, proj.shape], ["text_projection.weight", [512, 32]]);
});

test("clip-text: the pooled position follows transformers (legacy argmax when eos is 2, else the first eos)", async () => {
  assert.deepEqual(poolPositions(ids("call1"), { eosTokenId: 2 }), [0, 4]); // the case notes
  assert.deepEqual(poolPositions(ids("call0"), { eosTokenId: 2 }), [8, 9, 76]);
  assert.deepEqual(
    poolPositions(
      [
        [5, 7, 3, 7],
        [1, 2, 3, 4],
      ],
      { eosTokenId: 7 },
    ),
    [1, 0],
  ); // none → 0
  // the in-graph rule (no poolIndex) picks the same rows as the host helper
  const te = await fixtureModel;
  const rows = [
    [3, 9, 9, 4, 9, 1],
    [2, 2, 5, 0, 1, 5],
    [8, 1, 2, 3, 4, 6],
  ];
  for (const eos of [2, 9, 5]) {
    const c = { ...te.typedConfig, eosTokenId: eos };
    const g = await compile(
      { ids: { shape: [3, 6], dtype: "int64" } },
      (inp, graph) => {
        const r = clipTextForward(ParamScope.frozen(graph, te.params), c, inp.ids);
        return { last: r.lastHiddenState, pooled: r.pooled };
      },
      { threads: 1 },
    );
    const out = await g.run({ ids: HostTensor.int64(rows.flat(), [3, 6]) });
    g.dispose();
    const last = f32(out["last"]);
    const want = poolPositions(rows, c).flatMap((p, i) => [
      ...last.subarray((i * 6 + p) * 32, (i * 6 + p + 1) * 32),
    ]);
    assert.deepEqual([...f32(out["pooled"])], want, `eos ${eos}`);
  }
});

// ---- a small model with gelu and a real end-of-text id, against a float64 host implementation ----

const SMALL: Partial<ClipTextConfig> = {
  vocabSize: 50,
  hiddenSize: 16,
  intermediateSize: 24,
  projectionDim: 12,
  numHiddenLayers: 2,
  numAttentionHeads: 2,
  maxPositionEmbeddings: 10,
  hiddenAct: "gelu",
  bosTokenId: 48,
  eosTokenId: 49,
  padTokenId: 49,
};
const ROWS = [
  [48, 7, 20, 33, 49, 49, 49, 49],
  [48, 3, 3, 41, 12, 5, 9, 49],
];
const MASK = [
  [1, 1, 1, 1, 1, 0, 0, 0],
  [1, 1, 1, 1, 1, 1, 1, 1],
];

/** Weights drawn N(0, 0.3) everywhere (LayerNorm weights around 1), so no parameter is trivial. */
function perturbed(params: Params, seed: number): Params {
  const rng = new Rng(seed);
  const out: Params = new Map();
  for (const [k, v] of params) {
    const d = rng.normal(v.size, 0, 0.3);
    if (/layer_norm.*weight$/.test(k)) for (let i = 0; i < d.length; i++) d[i]! += 1;
    out.set(k, new HostTensor(d, v.shape));
  }
  return out;
}

/** The CLIP text tower in float64, straight from the equations (pre-LN layers, causal + padding mask). */
function hostClip(p: Params, c: ClipTextConfig, rows: number[][], mask?: number[][]) {
  const w = (k: string) => Array.from(p.get(`text_model.${k}`)!.data);
  const [d, hh] = [c.hiddenSize, c.numAttentionHeads];
  const hd = d / hh;
  const lin = (x: number[][], k: string, out: number) => {
    const [W, b] = [w(`${k}.weight`), w(`${k}.bias`)];
    return x.map((r) =>
      Array.from({ length: out }, (_, o) => r.reduce((s, v, i) => s + v * W[o * r.length + i]!, b[o]!)),
    );
  };
  const ln = (x: number[][], k: string) => {
    const [g, b] = [w(`${k}.weight`), w(`${k}.bias`)];
    return x.map((r) => {
      const mu = r.reduce((s, v) => s + v, 0) / d;
      const vr = r.reduce((s, v) => s + (v - mu) ** 2, 0) / d;
      return r.map((v, i) => ((v - mu) / Math.sqrt(vr + c.layerNormEps)) * g[i]! + b[i]!);
    });
  };
  const gelu = (x: number) => 0.5 * x * (1 + erf(x / Math.SQRT2));
  const [tok, pos] = [w("embeddings.token_embedding.weight"), w("embeddings.position_embedding.weight")];
  return rows.map((ids, n) => {
    let h = ids.map((id, t) => Array.from({ length: d }, (_, i) => tok[id * d + i]! + pos[t * d + i]!));
    for (let l = 0; l < c.numHiddenLayers; l++) {
      const pre = `encoder.layers.${l}`;
      const x = ln(h, `${pre}.layer_norm1`);
      const [q, k, v] = ["q", "k", "v"].map((s) => lin(x, `${pre}.self_attn.${s}_proj`, d)) as [
        number[][],
        number[][],
        number[][],
      ];
      const att = x.map((_, i) => {
        const y = new Array<number>(d).fill(0);
        for (let head = 0; head < hh; head++) {
          const cols = (r: number[]) => r.slice(head * hd, (head + 1) * hd);
          const keep = (j: number) => j <= i && (mask ? mask[n]![j] : 1) === 1;
          const s = k.map((kr, j) =>
            keep(j) ? cols(q[i]!).reduce((a, qv, e) => a + qv * cols(kr)[e]!, 0) / Math.sqrt(hd) : -Infinity,
          );
          const m = Math.max(...s);
          const e = s.map((z) => Math.exp(z - m));
          const z = e.reduce((a, b) => a + b, 0);
          for (const [j, vr] of v.entries()) {
            for (const [t, vv] of cols(vr).entries()) y[head * hd + t]! += (e[j]! / z) * vv;
          }
        }
        return y;
      });
      const out = lin(att, `${pre}.self_attn.out_proj`, d);
      h = h.map((r, i) => r.map((val, j) => val + out[i]![j]!));
      const f = lin(
        lin(ln(h, `${pre}.layer_norm2`), `${pre}.mlp.fc1`, c.intermediateSize).map((r) => r.map(gelu)),
        `${pre}.mlp.fc2`,
        d,
      );
      h = h.map((r, i) => r.map((val, j) => val + f[i]![j]!));
    }
    const last = ln(h, "final_layer_norm");
    return { last, pooled: last[poolPositions([ids], c)[0]!]! };
  });
}

test("clip-text: gelu, padding mask, first-eos pooling and text_projection match a float64 host implementation", async () => {
  const fresh = CLIPTextModelWithProjection.fromConfig(SMALL, { seed: 3 });
  const params = perturbed(fresh.params, 4);
  const proj = CLIPTextModelWithProjection.fromParams(SMALL, params, { session: { threads: 1 } });
  const tower = new Map([...params].filter(([k]) => k !== "text_projection.weight"));
  const plain = CLIPTextModel.fromParams(SMALL, tower, { session: { threads: 1 } });
  const c = proj.typedConfig;
  for (const mask of [undefined, MASK]) {
    const want = hostClip(params, c, ROWS, mask);
    const opts = mask ? { attentionMask: mask } : {};
    const a = await plain.forward(ROWS, opts);
    const b = await proj.forward(ROWS, opts);
    const lastRef = Float32Array.from(want.flatMap((r) => r.last.flat()));
    assert.ok(maxRel(f32(a.lastHiddenState), lastRef) < 1e-5, "last_hidden_state");
    assert.ok(maxRel(f32(a.poolerOutput), Float32Array.from(want.flatMap((r) => r.pooled))) < 1e-5, "pooled");
    assert.deepEqual(b.lastHiddenState.data, a.lastHiddenState.data);
    // text_embeds = pooled @ text_projectionᵀ on the host
    const W = f32(params.get("text_projection.weight"));
    const pooled = f32(a.poolerOutput);
    const embeds = Float32Array.from({ length: 2 * 12 }, (_, i) => {
      const [n, o] = [Math.floor(i / 12), i % 12];
      let s = 0;
      for (let j = 0; j < 16; j++) s += pooled[n * 16 + j]! * W[o * 16 + j]!;
      return s;
    });
    assert.deepEqual(b.textEmbeds.shape, [2, 12]);
    assert.ok(maxRel(f32(b.textEmbeds), embeds) < 1e-5, "text_embeds");
  }
  proj.dispose();
  plain.dispose();
});

test("clip-text: a fresh model is initialized as transformers' _init_weights", () => {
  const te = CLIPTextModelWithProjection.fromConfig({ ...SMALL, initializerFactor: 2 }, { seed: 1 });
  const init = new Map(te.specs.map((s) => [s.name, s.init]));
  const std = (k: string) => {
    const i = init.get(k)!;
    return i.kind === "normal" ? i.std : i.kind;
  };
  const [d, layers, f] = [16, 2, 2];
  assert.equal(std("text_model.embeddings.token_embedding.weight"), 0.02 * f);
  assert.equal(std("text_model.embeddings.position_embedding.weight"), 0.02 * f);
  assert.equal(
    std("text_model.encoder.layers.1.self_attn.q_proj.weight"),
    d ** -0.5 * (2 * layers) ** -0.5 * f,
  );
  assert.equal(std("text_model.encoder.layers.1.self_attn.out_proj.weight"), d ** -0.5 * f);
  assert.equal(std("text_model.encoder.layers.0.mlp.fc1.weight"), (2 * d) ** -0.5 * f);
  assert.equal(std("text_model.encoder.layers.0.mlp.fc2.weight"), d ** -0.5 * (2 * layers) ** -0.5 * f);
  assert.equal(std("text_projection.weight"), d ** -0.5 * f);
  assert.equal(std("text_model.encoder.layers.0.mlp.fc2.bias"), "zeros");
  assert.equal(std("text_model.final_layer_norm.weight"), "ones");
  const tok = f32(te.params.get("text_model.embeddings.token_embedding.weight"));
  const sd = Math.sqrt(tok.reduce((s, v) => s + v * v, 0) / tok.length);
  assert.ok(Math.abs(sd - 0.04) < 0.004, `token embedding std ${sd}`);
});

// ---- folders ----

test("clip-text: save → fromPretrained round trip (F32 exact, F16 rounded) writes transformers' files", async () => {
  const te = await fixtureModel;
  const dir = join(tmp, "f32");
  await te.savePretrained(dir);
  const cfg = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
  assert.deepEqual(cfg, JSON.parse(readFileSync(join(MODEL, "config.json"), "utf8")));
  assert.deepEqual(Object.keys(cfg), Object.keys(cfg).sort());
  const file = readSafetensors(join(dir, "model.safetensors"));
  assert.equal(file.metadata["format"], "pt");
  const back = await CLIPTextModel.fromPretrained(dir, { session: { threads: 1 } });
  const x = ids("call0");
  const [a, b] = [await te.forward(x), await back.forward(x)];
  assert.deepEqual(b.lastHiddenState.data, a.lastHiddenState.data);

  const dir16 = join(tmp, "f16");
  await te.savePretrained(dir16, { dtype: "float16" });
  assert.equal(JSON.parse(readFileSync(join(dir16, "config.json"), "utf8")).torch_dtype, "float16");
  assert.equal(
    readSafetensors(join(dir16, "model.safetensors")).dtypes.get("text_model.final_layer_norm.bias"),
    "F16",
  );
  const half = await CLIPTextModel.fromPretrained(dir16, { session: { threads: 1 } });
  for (const [k, v] of te.params) {
    assert.ok(maxRel(f32(half.params.get(k)), v.data) < 1e-3, k);
  }
  assert.ok(maxRel(f32((await half.forward(x)).lastHiddenState), f32(a.lastHiddenState)) < 1e-2);
  back.dispose();
  half.dispose();
});

test("clip-text: pipeline folders, kept config keys, old checkpoints and full CLIPModel configs load", async () => {
  const te = await fixtureModel;
  const json = JSON.parse(readFileSync(join(MODEL, "config.json"), "utf8"));
  // a pipeline folder: text_encoder/ is found; unknown keys are kept and written back
  const pipe = join(tmp, "pipe");
  const extra = CLIPTextModel.fromParams(
    { ...json, dropout: 0, _name_or_path: "openai/clip-vit-large-patch14" },
    te.params,
  );
  await extra.savePretrained(join(pipe, "text_encoder"));
  const fromPipe = await CLIPTextModel.fromPretrained(pipe);
  assert.equal(fromPipe.config["dropout"], 0);
  assert.equal(fromPipe.config["_name_or_path"], "openai/clip-vit-large-patch14");
  assert.deepEqual(fromPipe.params, te.params);
  // an old checkpoint with the int64 position_ids buffer, and fp16 as a variant file
  const old = join(tmp, "old");
  mkdirSync(old);
  writeFileSync(join(old, "config.json"), JSON.stringify(json));
  const withIds = new Map<string, HostTensor>(te.params);
  withIds.set("text_model.embeddings.position_ids", HostTensor.int64([...Array(77).keys()], [1, 77]));
  writeSafetensors(join(old, "model.fp16.safetensors"), withIds, { dtype: "F16" });
  assert.equal((await CLIPTextModel.fromPretrained(old, { variant: "fp16" })).numParams, 49536);
  // a full CLIPModel folder: its text_config and text weights (the vision tower is not read)
  const full = join(tmp, "full");
  mkdirSync(full);
  const { model_type: _, architectures: __, ...text } = json;
  writeFileSync(
    join(full, "config.json"),
    JSON.stringify({ model_type: "clip", architectures: ["CLIPModel"], text_config: text }),
  );
  const all = new Map<string, HostTensor>(te.params);
  all.set("text_projection.weight", HostTensor.full([512, 32], 0.5));
  all.set("vision_model.post_layernorm.weight", HostTensor.full([8], 1));
  all.set("logit_scale", HostTensor.scalar(2.6));
  writeSafetensors(join(full, "model.safetensors"), all);
  const p = await CLIPTextModelWithProjection.fromPretrained(full);
  assert.equal(p.params.get("text_projection.weight")!.data[0], 0.5);
  assert.equal(p.config["model_type"], "clip_text_model");
});

test("clip-text: bad folders, configs and inputs are answered clearly", async () => {
  await assert.rejects(CLIPTextModel.fromPretrained(join(tmp, "nowhere")), /CLIPTextModel: no folder at/);
  const empty = join(tmp, "empty");
  mkdirSync(empty);
  await assert.rejects(CLIPTextModel.fromPretrained(empty), /has no config\.json/);
  writeFileSync(join(empty, "config.json"), JSON.stringify({ model_type: "clip_text_model" }));
  await assert.rejects(CLIPTextModel.fromPretrained(empty), /has no model\.safetensors/);
  await assert.rejects(
    CLIPTextModelWithProjection.fromPretrained(MODEL),
    /missing "text_projection\.weight".*load it with CLIPTextModel/,
  );
  assert.throws(
    () => CLIPTextModel.fromConfig({ ...SMALL, hiddenAct: "tanh" as "gelu" }),
    /"hidden_act" is "tanh"; use "quick_gelu" or "gelu"/,
  );
  assert.throws(
    () => CLIPTextModel.fromConfig({ hidden_size: 32, num_attention_heads: 5 }),
    /"num_attention_heads" is 5; use a divisor of hidden_size \(32\)/,
  );
  assert.throws(
    () => CLIPTextModel.fromConfig({ model_type: "clip_vision_model" }),
    /"model_type" is "clip_vision_model"/,
  );
  assert.throws(
    () => CLIPTextModel.fromConfig({ architectures: ["BertModel"] }),
    /"architectures" is \["BertModel"\]; use \["CLIPTextModel"\]/,
  );
  assert.throws(() => CLIPTextModel.fromConfig({ vocab_size: -3 }), /"vocab_size" is -3; use an integer ≥ 1/);
  assert.throws(() => CLIPTextModel.fromConfig({ vocabSize: 5, hidden_size: 8 }), /mixes transformers keys/);

  const te = await fixtureModel;
  await assert.rejects(
    te.forward([[0, 1000]]),
    /token id 1000 at \[0, 1\] is outside the vocabulary 0\.\.999/,
  );
  await assert.rejects(te.forward([[-1, 3]]), /token id -1 at \[0, 0\]/);
  await assert.rejects(
    te.forward([Array(78).fill(5)]),
    /78 tokens do not fit max_position_embeddings 77; truncate/,
  );
  await assert.rejects(te.forward([[1, 2], [3]]), /rows of equal length/);
  await assert.rejects(
    te.forward([[1, 2]], { attentionMask: [[1, 1, 1]] }),
    /attentionMask must be \[1, 2\]/,
  );
  await assert.rejects(te.forward([[1, 2]], { attentionMask: [[1, 0.5]] }), /attentionMask holds 0\.5/);
  await assert.rejects(te.forward(new HostTensor(new Float32Array(2), [1, 2]) as never), /int64 \[N, L\]/);
});

// ---- training: gradients through the embeddings (gather), positions (slice), attention and norms ----

test("clip-text: gradients of a loss w.r.t. the weights agree with finite differences", async () => {
  const c = clipTextConfig({
    ...SMALL,
    hiddenAct: "quick_gelu",
    maxPositionEmbeddings: 6,
    vocabSize: 12,
    eosTokenId: 2,
  });
  const params = perturbed(CLIPTextModel.fromConfig(c, { seed: 5 }).params, 6);
  const rows = [
    [1, 4, 4, 11, 0],
    [3, 9, 2, 2, 7],
  ];
  const graph = new Graph();
  const scope = ParamScope.root(graph);
  const x = graph.input("ids", [2, 5], "int64");
  const r = clipTextForward(scope, c, x, { attentionMask: graph.input("mask", [2, 5]) });
  const rng = new Rng(7);
  const w1 = graph.constant(new HostTensor(rng.normal(2 * 5 * 16), [2, 5, 16]));
  const w2 = graph.constant(new HostTensor(rng.normal(2 * 16), [2, 16]));
  // Σ last·W₁ + 0.1·Σ h₁·pooled + Σ pooled·W₂: the final norm, a layer's states and the pooled rows
  const total = o.add(
    o.add(
      o.sum(o.mul(r.lastHiddenState, w1)),
      o.mul(o.sum(o.mul(r.hiddenStates[1]!, o.reshape(r.pooled, [2, 1, 16]))), 0.1),
    ),
    o.sum(o.mul(r.pooled, w2)),
  );
  const names = [
    "text_model.embeddings.token_embedding.weight",
    "text_model.embeddings.position_embedding.weight",
    "text_model.encoder.layers.0.self_attn.k_proj.weight",
    "text_model.encoder.layers.1.layer_norm1.weight",
    "text_model.encoder.layers.0.mlp.fc1.bias",
  ];
  const tensors = new Map(scope.specs.map((s, i) => [s.name, scope.tensors[i]!]));
  const grads = grad(
    total,
    names.map((n) => tensors.get(n)!),
  );
  const outs = Object.fromEntries(grads.map((g, i) => [`g${i}`, g]));
  const maskRows = [1, 1, 1, 1, 0, 1, 1, 1, 1, 1];
  const feeds: Record<string, HostTensor> = {
    ids: HostTensor.int64(rows.flat(), [2, 5]),
    mask: new HostTensor(Float32Array.from(maskRows), [2, 5]),
    ...Object.fromEntries(params),
  };
  const g = await compileGraph(graph, outs, { threads: 1 });
  const got = await g.run(feeds);
  g.dispose();
  // central differences of the float64 reference of the forward graph
  const evalLoss = refEvaluator(graph, [total]);
  const refFeeds = Object.fromEntries(
    Object.entries(feeds).map(([k, v]) => [k, refTensor(v.toArray(), v.shape, v.dtype)]),
  );
  const h = 1e-4;
  names.forEach((name, i) => {
    const analytic = f32(got[`g${i}`]);
    const base = refFeeds[name]!;
    // the rows of token ids 4 and 5 (5 appears nowhere: its gradient is 0) and a few other elements
    const picks = name.includes("token_embedding")
      ? [4 * 16, 4 * 16 + 7, 5 * 16 + 3, 11 * 16 + 1]
      : [0, 3, 9];
    for (const k of picks) {
      const at = (delta: number) => {
        const data = Float64Array.from(base.data);
        data[k]! += delta;
        return evalLoss({ ...refFeeds, [name]: { ...base, data } })[0]!.data[0]!;
      };
      const fd = (at(h) - at(-h)) / (2 * h);
      assert.ok(
        Math.abs(fd - analytic[k]!) <= 1e-3 + 1e-3 * Math.abs(fd),
        `${name}[${k}]: autodiff ${analytic[k]} vs ${fd}`,
      );
    }
  });
});
