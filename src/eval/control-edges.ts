/**
 * Edge agreement of an edge ControlNet (Zhang, Rao & Agrawala 2023, §4: "the generated image follows
 * the condition"): for each (prompt, control edge map) pair the pipeline generates once with the
 * control image at scale 1 and once without it (the U-Net alone: scale 0), Canny finds the generated
 * image's edges (data/edges.ts, the detector the control maps were made with), and edgeF1
 * (eval/edges.ts, 2-pixel tolerance by default) scores them against the control edges. Beside the two,
 * the chance level: each image made without control against ANOTHER pair's control edges (how much two
 * unrelated images of the set agree by their shared layout alone). The generations are scored at each
 * of several tolerances from one pass (the Berkeley benchmark's 0.0075 of the image diagonal is
 * `bsdsTolerance`).
 *
 * `emojiControlSet` gives the measurement the emoji model's held-out images: their captions as
 * prompts and their Canny edges as control maps, spread evenly over the held-out split — as they are
 * (each emoji fills its square, so the caption alone implies much of the outline), or re-laid out
 * (shrunk and moved at random: the outline's size and place come from the control image alone).
 */
import { type CannyOptions, canny } from "../data/edges.ts";
import { loadEmoji } from "../data/emoji.ts";
import { relayout } from "../data/layout.ts";
import { parametersText, type SamplingOptions, samplingDefaults } from "../pipelines/options.ts";
import type { LoadedPipeline } from "../pipelines/pipeline-dir.ts";
import { imageSize, pipelineGenerate } from "../pipelines/run.ts";
import { schedulerFor } from "../pipelines/scheduler-names.ts";
import { formatShape, HostTensor } from "../tensor/host.ts";
import { Rng } from "../tensor/rng.ts";
import { type EdgeScore, edgeF1 } from "./edges.ts";

export interface ControlEdgeOptions extends Partial<SamplingOptions> {
  /** The detector's settings (default: the pipeline's diffuse.json `control.canny`, else Canny's defaults). */
  readonly canny?: CannyOptions;
  /** edgeF1's tolerance in pixels (default 2); the report's first row. */
  readonly tolerance?: number;
  /** More tolerances to score the same images at (rows after `tolerance`'s). */
  readonly tolerances?: readonly number[];
  /** Images per generation call (default 32). */
  readonly batch?: number;
  /** After each batch: how many pairs are done. */
  readonly onProgress?: (done: number, total: number) => void;
}

/** The scores at one tolerance. */
export interface ControlEdgeRow {
  readonly tolerance: number;
  /** With the control image at scale 1. */
  readonly withControl: EdgeScore;
  /** Without it (the base U-Net). */
  readonly without: EdgeScore;
  /** Chance: images made without control against another pair's control edges. */
  readonly unpaired: EdgeScore;
}

export interface ControlEdgeReport extends ControlEdgeRow {
  readonly n: number;
  /** The sampling settings, as a `parameters` text. */
  readonly settings: string;
  readonly canny: CannyOptions;
  /** Every tolerance's scores, `tolerance`'s first. */
  readonly rows: readonly ControlEdgeRow[];
}

/** The Berkeley segmentation benchmark's matching distance (0.0075 of the diagonal) for an image size. */
export function bsdsTolerance(size: number): number {
  return 0.0075 * Math.hypot(size, size);
}

/** The Canny settings a pipeline's ControlNet was trained with (diffuse.json `control.canny`), if recorded. */
export function pipelineCanny(pipe: Pick<LoadedPipeline, "info">): CannyOptions {
  const c = pipe.info["control"];
  const rec = typeof c === "object" && c !== null ? (c as Record<string, unknown>)["canny"] : undefined;
  if (typeof rec !== "object" || rec === null) return {};
  const r = rec as Record<string, unknown>;
  const num = (k: string) => (typeof r[k] === "number" ? { [k]: r[k] as number } : {});
  return { ...num("sigma"), ...num("low"), ...num("high") };
}

/** One channel [N, 1, H, W] of edge maps [N, C, H, W]. */
function firstChannel(m: HostTensor<"float32">): HostTensor<"float32"> {
  const [n, c, h, w] = m.shape as [number, number, number, number];
  if (c === 1) return m;
  const out = new Float32Array(n * h * w);
  for (let i = 0; i < n; i++) out.set(m.data.subarray(i * c * h * w, (i * c + 1) * h * w), i * h * w);
  return new HostTensor(out, [n, 1, h, w]);
}

/**
 * Edge F1 of a ControlNet pipeline's images against the control edge maps they were made from, with
 * the control at scale 1 and without it. edgeMaps: [N, C, S, S] binary maps in [0, 1] at the image size
 * (they are the control images); prompts: one per map.
 */
export async function evalControlEdges(
  pipe: LoadedPipeline,
  edgeMaps: HostTensor<"float32">,
  prompts: readonly string[],
  opts: ControlEdgeOptions = {},
): Promise<ControlEdgeReport> {
  const size = imageSize(pipe);
  const [n, c, h, w] = edgeMaps.shape as [number, number, number, number];
  if (edgeMaps.shape.length !== 4 || h !== size || w !== size || n !== prompts.length) {
    throw new Error(
      `evalControlEdges: edge maps must be [${prompts.length}, C, ${size}, ${size}] (one per prompt, at the image size), got ${formatShape(edgeMaps.shape)}`,
    );
  }
  const sampling: SamplingOptions = { ...samplingDefaults(pipe), ...opts };
  const scheduler = schedulerFor({ name: sampling.scheduler, karras: sampling.karras }, pipe.schedulerConfig);
  const cannyOpts = opts.canny ?? pipelineCanny(pipe);
  const tolerances = [opts.tolerance ?? 2, ...(opts.tolerances ?? [])];
  const batch = opts.batch ?? 32;
  const per = c * h * w;
  const plane = h * w;
  const targets = firstChannel(edgeMaps);
  const steeredEdges = new Float32Array(n * plane);
  const plainEdges = new Float32Array(n * plane);
  for (let lo = 0, k = 0; lo < n; lo += batch, k++) {
    const hi = Math.min(n, lo + batch);
    const image = new HostTensor<"float32">(edgeMaps.data.slice(lo * per, hi * per), [hi - lo, c, h, w]);
    const req = {
      prompts: prompts.slice(lo, hi),
      steps: sampling.steps,
      guidance: sampling.guidance,
      guidanceRescale: sampling.guidanceRescale,
      eta: sampling.eta,
      seed: sampling.seed + k,
    };
    const steered = await pipelineGenerate(pipe, scheduler, { ...req, control: { image, scale: 1 } });
    const plain = await pipelineGenerate(pipe, scheduler, req);
    steeredEdges.set(canny(steered, cannyOpts).data, lo * plane);
    plainEdges.set(canny(plain, cannyOpts).data, lo * plane);
    opts.onProgress?.(hi, n);
  }
  // chance: image i (no control) against pair i + ⌈n/2⌉'s control edges (another emoji when n > 1)
  const shift = Math.ceil(n / 2) % n;
  const others = new Float32Array(n * plane);
  for (let i = 0; i < n; i++)
    others.set(targets.data.subarray(((i + shift) % n) * plane, (((i + shift) % n) + 1) * plane), i * plane);
  const maps = (d: Float32Array) => new HostTensor<"float32">(d, [n, 1, h, w]);
  const score = (pred: Float32Array, target: HostTensor<"float32">, tolerance: number): EdgeScore => {
    const r = edgeF1(maps(pred), target, { tolerance });
    return { precision: r.precision, recall: r.recall, f1: r.f1 };
  };
  const rows = tolerances.map((tolerance) => ({
    tolerance,
    withControl: score(steeredEdges, targets, tolerance),
    without: score(plainEdges, targets, tolerance),
    unpaired: score(plainEdges, maps(others), tolerance),
  }));
  return { n, ...rows[0]!, rows, settings: parametersText(sampling), canny: cannyOpts };
}

/**
 * `count` held-out emoji (evenly spread over the split) as a control set: their captions and their
 * Canny edge maps [count, channels, size, size].
 */
export function emojiControlSet(
  count: number,
  opts: {
    size?: number;
    canny?: CannyOptions;
    channels?: 1 | 3;
    /** Re-lay out every image first (data/layout.ts), scales in [minScale, 1], from this seed. */
    layout?: { minScale: number; seed: number };
  } = {},
): { prompts: string[]; edges: HostTensor<"float32"> } {
  const size = opts.size ?? 64;
  const d = loadEmoji({ split: "holdout", size });
  if (!Number.isInteger(count) || count < 1 || count > d.count)
    throw new Error(`emojiControlSet: count must be 1 to ${d.count} (the held-out images), got ${count}`);
  const per = 3 * size * size;
  const idx = Array.from({ length: count }, (_, i) => Math.floor((i * d.count) / count));
  const images = new Float32Array(count * per);
  idx.forEach((j, i) => {
    images.set(d.images.subarray(j * per, (j + 1) * per), i * per);
  });
  const shown = opts.layout
    ? relayout(images, count, 3, size, new Rng(opts.layout.seed).fold("layout"), {
        minScale: opts.layout.minScale,
      })
    : images;
  const edges = canny(new HostTensor(shown, [count, 3, size, size]), {
    ...opts.canny,
    channels: opts.channels ?? 3,
  });
  return { prompts: idx.map((j) => d.captions[j]!), edges };
}
