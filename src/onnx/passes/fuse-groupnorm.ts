/**
 * The "fuseGroupNorm" pass: group norm in inference graphs as one pass of per-(sample, channel)
 * scale and shift.
 *
 * `nn.groupNorm` is traced as Reshape [N, G, M] → LayerNormalization (the `standardize` primitive) →
 * Reshape back → Mul by the per-channel weight → Add the per-channel bias: three passes over the
 * tensor that write it (plus the statistics' reads). Where nothing else reads the normalized tensor
 * — a graph without the group norm's backward pass, i.e. every sampling graph — the same values are
 * y = x·a + s with a = w·r and s = b − μ·a per sample and channel (μ the group's mean, r its inverse
 * standard deviation), which BatchNormalization computes in one pass when the batch is folded into
 * its channels ([1, N·C, …], mean 0, variance 1, ε 0). The statistics are two reads (ReduceMean and
 * ReduceSumSquare: E[x²] − μ², the formula ONNX Runtime's LayerNormalization kernel uses too).
 * Training graphs keep the traced form: their backward pass reads the normalized tensor.
 */
import type { RewriteCtx } from "../context.ts";
import { addReader, attrInt, type OnnxNode } from "../proto.ts";

/** Rewrites every fusable group norm in `nodes` (returned as a new list; the old one is untouched). */
export function fuseGroupNorms(nodes: readonly OnnxNode[], c: RewriteCtx): OnnxNode[] {
  const readers = new Map<string, OnnxNode[]>();
  const producer = new Map<string, OnnxNode>();
  for (const n of nodes) {
    for (const i of n.inputs) if (i) addReader(readers, i, n);
    for (const o of n.outputs) if (o) producer.set(o, n);
  }
  const only = (value: string, op: string): OnnxNode | undefined => {
    const r = readers.get(value) ?? [];
    return r.length === 1 && r[0]!.opType === op && !r[0]!.domain ? r[0] : undefined;
  };
  const removed = new Set<OnnxNode>();
  const added = new Map<OnnxNode, OnnxNode[]>(); // new nodes, emitted in place of the final Add
  for (const ln of nodes) {
    if (ln.opType !== "LayerNormalization" || ln.domain) continue;
    const [grouped, ones] = ln.inputs as [string, string];
    const [standardized, mean, inv] = ln.outputs;
    if (ln.inputs.length !== 2 || (mean && readers.has(mean)) || (inv && readers.has(inv))) continue;
    // another LayerNormalization of the same input is a backward pass's statistics: leave it
    if ((readers.get(grouped) ?? []).some((r) => r !== ln && r.opType === "LayerNormalization")) continue;
    const reshapeIn = producer.get(grouped);
    const back = only(standardized!, "Reshape");
    const mul = back && only(back.outputs[0]!, "Mul");
    const add = mul && only(mul.outputs[0]!, "Add");
    if (reshapeIn?.opType !== "Reshape" || !back || !mul || !add) continue;
    if ([standardized!, back.outputs[0]!, mul.outputs[0]!].some((v) => c.isOutput(v))) continue;
    const x = reshapeIn.inputs[0]!;
    const xShape = c.shape(x);
    const gShape = c.shape(grouped);
    if (!xShape || !gShape || gShape.length !== 3 || xShape.length < 3 || attrInt(ln, "axis") !== 2) continue;
    const [N, C] = xShape as [number, number];
    const [, G, M] = gShape as [number, number, number];
    const w = mul.inputs.find((i) => i !== back.outputs[0]);
    const b = add.inputs.find((i) => i !== mul.outputs[0]);
    const perChannel = (v: string | undefined): boolean => {
      const s = v === undefined ? undefined : c.shape(v);
      return !!s && s.length === xShape.length && s[1] === C && s.every((d, i) => i === 1 || d === 1);
    };
    if (!w || !b || !perChannel(w) || !perChannel(b) || C % G !== 0) continue;
    const eps = ln.attributes?.["epsilon"];
    const epsValue = eps?.kind === "float" ? eps.value : 1e-5;
    const t = (hint: string) => c.tmp(hint);
    const [mu, sq, ex2, mu2, variance, veps, sd, r, wG, bG, a, mua, shift, a1, s1, xr, y] = [
      "gn_mean",
      "gn_sumsq",
      "gn_ex2",
      "gn_mean2",
      "gn_var",
      "gn_var_eps",
      "gn_std",
      "gn_inv",
      "gn_w",
      "gn_b",
      "gn_scale",
      "gn_mean_scale",
      "gn_shift",
      "gn_scale_nc",
      "gn_shift_nc",
      "gn_x_nc",
      "gn_y",
    ].map(t) as string[];
    const axes = {
      axes: { kind: "ints" as const, value: [2] },
      keepdims: { kind: "int" as const, value: 1 },
    };
    const rest = xShape.slice(2).reduce((p, q) => p * q, 1);
    const fused: OnnxNode[] = [
      { opType: "ReduceMean", inputs: [grouped], outputs: [mu!], attributes: axes },
      { opType: "ReduceSumSquare", inputs: [grouped], outputs: [sq!], attributes: axes },
      { opType: "Mul", inputs: [sq!, c.f32([], Float32Array.of(1 / M))], outputs: [ex2!] },
      { opType: "Mul", inputs: [mu!, mu!], outputs: [mu2!] },
      { opType: "Sub", inputs: [ex2!, mu2!], outputs: [variance!] },
      { opType: "Add", inputs: [variance!, c.f32([], Float32Array.of(epsValue))], outputs: [veps!] },
      { opType: "Sqrt", inputs: [veps!], outputs: [sd!] },
      { opType: "Reciprocal", inputs: [sd!], outputs: [r!] },
      { opType: "Reshape", inputs: [w, c.i64([1, G, C / G])], outputs: [wG!] },
      { opType: "Reshape", inputs: [b, c.i64([1, G, C / G])], outputs: [bG!] },
      { opType: "Mul", inputs: [r!, wG!], outputs: [a!] },
      { opType: "Mul", inputs: [mu!, a!], outputs: [mua!] },
      { opType: "Sub", inputs: [bG!, mua!], outputs: [shift!] },
      { opType: "Reshape", inputs: [a!, c.i64([N * C])], outputs: [a1!] },
      { opType: "Reshape", inputs: [shift!, c.i64([N * C])], outputs: [s1!] },
      { opType: "Reshape", inputs: [x, c.i64([1, N * C, rest])], outputs: [xr!] },
      {
        opType: "BatchNormalization",
        inputs: [
          xr!,
          a1!,
          s1!,
          c.f32([N * C], new Float32Array(N * C)),
          c.f32([N * C], new Float32Array(N * C).fill(1)),
        ],
        outputs: [y!],
        attributes: { epsilon: { kind: "float", value: 0 } },
      },
      { opType: "Reshape", inputs: [y!, c.i64(xShape)], outputs: [add.outputs[0]!] },
    ];
    for (const n of [ln, back, mul, add]) removed.add(n);
    const onesNode = producer.get(ones);
    if (onesNode && (readers.get(ones) ?? []).length === 1) removed.add(onesNode);
    added.set(add, fused);
  }
  const out: OnnxNode[] = [];
  for (const n of nodes) {
    if (added.has(n)) out.push(...added.get(n)!);
    else if (!removed.has(n)) out.push(n);
  }
  return out;
}
