/**
 * `npm run bench -- conv-grad`: times each way of computing a convolution's gradients at U-Net shapes
 * (batch 64; the convolutions of the unet-mnist and unet-rgb32 bench configs), one session per
 * variant with only that computation in it:
 *
 * - fwd: the Conv itself, for scale;
 * - dx: the input gradient as a Conv with flipped, transposed weights (`conv-flipped`, what the
 *   lowering uses at stride 1) and as ONNX ConvTranspose;
 * - dW: the weight gradient under every `WeightGradStrategy`.
 *
 * The rule in `weightGradStrategy` (src/onnx/conv-grad.ts) is read off this table.
 *
 * The variants of a shape run round-robin (--rounds R, each running every variant --iters N times),
 * so a burst of load from other processes hits them alike; the fastest is judged by the minimum.
 *
 * options: --rounds R (5) --iters N (3) --warmup N (3) --threads N (2)
 *          --only SUBSTRING (shapes whose name contains it) --strategies a,b,… --wait-idle MAX_S
 */
import type { WeightGradStrategy } from "../src/onnx/passes/options.ts";
import { weightGradStrategy } from "../src/onnx/passes/weight-grad.ts";
import { encodeModel } from "../src/onnx/proto.ts";
import { compile } from "../src/runtime/compile.ts";
import { type CompiledGraph, loadGraph } from "../src/runtime/session.ts";
import { HostTensor } from "../src/tensor/host.ts";
import * as o from "../src/tensor/ops.ts";
import type { ConvAttrs } from "../src/tensor/primitives.ts";
import { LoadMonitor, load1, median, timeRuns, waitIdle } from "./timing.ts";

export interface ConvShape {
  name: string;
  x: readonly [number, number, number, number];
  out: number;
  kernel: number;
  stride: number;
  pad: number;
}

const conv = (c: number, hw: number, out: number, kernel = 3, stride = 1): ConvShape => ({
  name: `${kernel}x${kernel}${stride > 1 ? `/${stride}` : ""} ${c}->${out} @${hw}`,
  x: [64, c, hw, hw],
  out,
  kernel,
  stride,
  pad: kernel === 3 ? 1 : 0,
});

/** The convolutions of the two U-Net bench configs (shared/bench/configs), batch 64. */
export const UNET_CONVS: readonly ConvShape[] = [
  conv(1, 32, 32),
  conv(3, 32, 64),
  conv(32, 32, 32),
  conv(64, 32, 64),
  conv(32, 32, 32, 3, 2),
  conv(64, 32, 64, 3, 2),
  conv(32, 16, 64),
  conv(64, 16, 64),
  conv(64, 16, 128),
  conv(128, 16, 128),
  conv(64, 8, 64),
  conv(128, 8, 128),
  conv(64, 16, 64, 3, 2),
  conv(128, 8, 128, 1),
  conv(192, 16, 64),
  conv(96, 32, 32),
  conv(192, 16, 64, 1),
  conv(32, 32, 1),
];

export const CONCRETE: readonly Exclude<WeightGradStrategy, "auto">[] = [
  "im2col-matmul",
  "conv-batch-transposed",
  "gather-matmul",
  "gather-gemm",
  "split-gather",
];

export function attrsOf(s: ConvShape): ConvAttrs {
  return o.convAttrs({ stride: s.stride, padding: s.pad });
}

export function shapesOf(s: ConvShape): { w: number[]; y: number[] } {
  const [n, , h, w] = s.x;
  const ho = Math.floor((h + 2 * s.pad - s.kernel) / s.stride) + 1;
  const wo = Math.floor((w + 2 * s.pad - s.kernel) / s.stride) + 1;
  return { w: [s.out, s.x[1], s.kernel, s.kernel], y: [n, s.out, ho, wo] };
}

/** Multiply-adds × 2 of one convolution (each gradient costs the same). */
export function convFlop(s: ConvShape): number {
  const { y } = shapesOf(s);
  return 2 * y[0]! * y[1]! * s.x[1] * s.kernel * s.kernel * y[2]! * y[3]!;
}

export function randn(shape: readonly number[], seed: number): HostTensor {
  let st = seed >>> 0;
  const n = shape.reduce((p, q) => p * q, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    st = (st + 0x6d2b79f5) >>> 0;
    let t = st;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    data[i] = (((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1;
  }
  return new HostTensor(data, shape);
}

/** dx as a plain ONNX ConvTranspose (what the lowering falls back to at stride 2). */
async function convTransposeSession(s: ConvShape, threads: number): Promise<CompiledGraph> {
  const { w, y } = shapesOf(s);
  const a = attrsOf(s);
  const natH = (y[2]! - 1) * s.stride + s.kernel - 2 * s.pad;
  const natW = (y[3]! - 1) * s.stride + s.kernel - 2 * s.pad;
  const ints = (value: readonly number[]) => ({ kind: "ints" as const, value });
  const bytes = encodeModel({
    opsetVersion: 17,
    irVersion: 8,
    producerName: "bench",
    graph: {
      name: "dx",
      nodes: [
        {
          opType: "ConvTranspose",
          inputs: ["g", "w"],
          outputs: ["dx"],
          attributes: {
            strides: ints(a.strides),
            pads: ints(a.pads),
            output_padding: ints([s.x[2] - natH, s.x[3] - natW]),
          },
        },
      ],
      inputs: [
        { name: "g", dtype: "float32", shape: y },
        { name: "w", dtype: "float32", shape: w },
      ],
      outputs: [{ name: "dx", dtype: "float32", shape: s.x }],
      initializers: [],
    },
  });
  return loadGraph(
    bytes,
    [
      { name: "g", dtype: "float32", shape: y },
      { name: "w", dtype: "float32", shape: w },
    ],
    [{ name: "dx", dtype: "float32", shape: s.x }],
    { threads },
  );
}
interface Variant {
  name: string;
  graph: CompiledGraph;
  feeds: Record<string, HostTensor>;
  times: number[];
  cpu: number[];
}

function flag(args: readonly string[], name: string, dflt: string): string {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : dflt;
}

/** Every variant of one shape, compiled. */
async function variantsOf(
  s: ConvShape,
  strategies: readonly Exclude<WeightGradStrategy, "auto">[],
  threads: number,
): Promise<Variant[]> {
  const { w, y } = shapesOf(s);
  const a = attrsOf(s);
  const x = randn(s.x, 1);
  const wt = randn(w, 2);
  const gy = randn(y, 3);
  const opts = { threads };
  const out: Variant[] = [];
  const add = (name: string, graph: CompiledGraph, feeds: Record<string, HostTensor>) =>
    out.push({ name, graph, feeds, times: [], cpu: [] });
  const xw = { x: { shape: s.x }, w: { shape: w } };
  add("fwd Conv", await compile(xw, (t) => ({ y: o.conv2dRaw(t.x, t.w, a) }), opts), { x, w: wt });
  const gw = { g: { shape: y }, w: { shape: w } };
  const dx = await compile(gw, (t) => ({ dx: o.convTranspose(t.g, t.w, a, s.x) }), opts);
  add(s.stride === 1 ? "dx conv-flipped" : "dx (lowering)", dx, { g: gy, w: wt });
  add("dx ConvTranspose", await convTransposeSession(s, threads), { g: gy, w: wt });
  for (const strategy of strategies) {
    const xg = { x: { shape: s.x }, g: { shape: y } };
    const dw = await compile(xg, (t) => ({ dw: o.convWeightGrad(t.x, t.g, a, w) }), {
      ...opts,
      passes: { convWeightGrad: strategy },
    });
    add(`dW ${strategy}`, dw, { x, g: gy });
  }
  return out;
}

export async function main(args: readonly string[]): Promise<void> {
  const rounds = Number(flag(args, "rounds", "5"));
  const iters = Number(flag(args, "iters", "3"));
  const warmup = Number(flag(args, "warmup", "3"));
  const threads = Number(flag(args, "threads", "2"));
  const only = flag(args, "only", "");
  const strategies = flag(args, "strategies", CONCRETE.join(",")).split(",") as typeof CONCRETE;
  const waitS = Number(flag(args, "wait-idle", "0"));
  if (waitS > 0) console.log(`waited ${(await waitIdle(waitS)).toFixed(0)} s for the machine to go idle`);
  console.log(
    `conv-grad: ${threads} threads; ${rounds} rounds, each running every variant ${iters} times (after ${warmup} warm-up runs); load ${load1().toFixed(2)}`,
  );
  console.log(
    `${"shape".padEnd(20)} ${"variant".padEnd(26)} median ms   min ms  GFLOP/s (at min)  cpu ms (min)`,
  );
  for (const s of UNET_CONVS.filter((c) => c.name.includes(only))) {
    const variants = await variantsOf(s, strategies, threads);
    const mon = new LoadMonitor();
    mon.start();
    for (let r = 0; r < rounds; r++) {
      for (const v of variants) {
        const t = await timeRuns(() => v.graph.run(v.feeds), r === 0 ? warmup : 0, iters);
        v.times.push(...t.timesMs);
        v.cpu.push(...t.cpuMs);
      }
    }
    const others = mon.stop();
    for (const v of variants) {
      v.graph.dispose();
      const min = Math.min(...v.times);
      const gf = convFlop(s) / min / 1e6;
      console.log(
        `${s.name.padEnd(20)} ${v.name.padEnd(26)} ${median(v.times).toFixed(2).padStart(9)} ${min.toFixed(2).padStart(8)} ${gf.toFixed(1).padStart(8)} ${Math.min(
          ...v.cpu,
        )
          .toFixed(2)
          .padStart(12)}`,
      );
    }
    const dws = variants.filter((v) => v.name.startsWith("dW "));
    const best = dws.reduce((p, q) => (Math.min(...q.times) < Math.min(...p.times) ? q : p));
    const picked = weightGradStrategy({ ...attrsOf(s), wShape: shapesOf(s).w }, s.x);
    console.log(
      `${s.name}: fastest ${best.name} (by min); auto picks ${picked}; others used ${others.toFixed(2)} cores\n`,
    );
  }
}
