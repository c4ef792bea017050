/**
 * What a studio job costs, estimated from the model's configs and the request (count, size, steps,
 * guidance) before any work: the memory its compiled graphs keep (a sampling worker caches them) and
 * its multiply-accumulates (the time). Each network the job runs — the denoiser at its batch and
 * latent size, for a text-to-image model the VAE decoder (the final images, and two previews per step)
 * and the text encoder — is traced without weights and read by tensor/graph-cost.ts: the peak of the
 * values alive at once and the MACs.
 *
 * Memory of one compiled graph ≈ ARENA × peak (ONNX Runtime's arena keeps its largest working set,
 * grown in chunks) + WEIGHT_COPIES × weights (the embedded constants and their pre-packed copy) +
 * SESSION_BYTES. Calibrated on the bundled MNIST U-Net in the studio (2-core x86, glibc; 16 images
 * with guidance, sizes 32, 48, 64, 96): the RSS grew by 49, 121, 180 and 412 MB, estimated 94, 126,
 * 186 and 556 MB. Graphs dominated by attention are overestimated more (the test fixture's U-Net at
 * 80×80: 3.2 GB estimated, 1.5 GB measured): a refusal errs on the side of the machine.
 */
import type { BoundDenoiser } from "../models/registry.ts";
import type { AutoencoderKLConfig } from "../models/vae/config.ts";
import { vaeScaleFactor } from "../models/vae/config.ts";
import { DEFAULT_SLICE_SIZE } from "../models/vae/model.ts";
import { vaeDecode } from "../models/vae/vae.ts";
import type { LoadedPipeline } from "../pipelines/pipeline-dir.ts";
import { type InputSpec, trace } from "../runtime/compile.ts";
import { type GraphCost, graphCost } from "../tensor/graph-cost.ts";
import { ParamScope } from "../tensor/params.ts";
import type { Tensor } from "../tensor/symbolic.ts";

const ARENA = 1.25;
const WEIGHT_COPIES = 2;
const SESSION_BYTES = 64 * 2 ** 20;

/** What a model's job costs are computed from: its configs and weight sizes (no weights are kept). */
export interface ModelCost {
  readonly denoiser: BoundDenoiser;
  readonly denoiserWeightBytes: number;
  /** A ControlNet's weights (0 without one). */
  readonly controlnetWeightBytes: number;
  readonly vae: { config: AutoencoderKLConfig; weightBytes: number } | null;
  readonly text: {
    weightBytes: number;
    tokens: number;
    hidden: number;
    intermediate: number;
    heads: number;
  } | null;
  /** Traced costs by network and input shape (tracing takes milliseconds to a second: done once). */
  readonly traced: Map<string, GraphCost>;
}

/** The shape of a job: what its cost depends on. */
export interface JobShape {
  count: number;
  /** Image side in pixels. */
  size: number;
  steps: number;
  /** Classifier-free guidance that batches [uncond | cond] (scale neither 0 nor 1, on a conditional model). */
  guided: boolean;
}

export interface JobEstimate {
  /** Memory the job's compiled graphs keep while cached (bytes). */
  graphBytes: number;
  /** Memory of the model's weights as loaded (bytes; shared by all its cached shapes). */
  modelBytes: number;
  /** Multiply-accumulates of the whole job. */
  macs: number;
}

const f32Bytes = (params: ReadonlyMap<string, { data: { byteLength: number } }>): number => {
  let n = 0;
  for (const v of params.values()) n += v.data.byteLength;
  return n;
};

/** A loaded pipeline's cost description (its configs and weight sizes; the weights may be released after). */
export function modelCost(pipe: LoadedPipeline): ModelCost {
  const te = pipe.text?.textEncoder;
  return {
    denoiser: pipe.denoiser.bound,
    denoiserWeightBytes: f32Bytes(pipe.denoiser.params),
    controlnetWeightBytes: pipe.controlnet ? f32Bytes(pipe.controlnet.params) : 0,
    vae: pipe.vae ? { config: pipe.vae.config, weightBytes: f32Bytes(pipe.vae.params) } : null,
    text:
      te && pipe.text
        ? {
            weightBytes: f32Bytes(te.params),
            tokens: pipe.text.tokenizer.modelMaxLength,
            hidden: te.typedConfig.hiddenSize,
            intermediate: te.typedConfig.intermediateSize,
            heads: te.typedConfig.numAttentionHeads,
          }
        : null,
    traced: new Map(),
  };
}

/** The cost of one traced network at one input shape (memoized per model). */
function traced(
  cost: ModelCost,
  key: string,
  inputs: Record<string, InputSpec>,
  body: (inputs: Record<string, Tensor>, scope: ParamScope) => Tensor,
): GraphCost {
  let c = cost.traced.get(key);
  if (!c) {
    // parameters as graph inputs: nothing needs the weights, and their bytes are not activations
    const { graph, outputs } = trace(inputs, (inp, g) => ({ out: body(inp, ParamScope.root(g)) }));
    c = graphCost(graph, Object.values(outputs));
    if (cost.traced.size >= 64) cost.traced.delete(cost.traced.keys().next().value as string);
    cost.traced.set(key, c);
  }
  return c;
}

/** Memory one compiled graph keeps: its working set (arena) and its weights. */
const graphMemory = (c: GraphCost, weightBytes: number): number =>
  ARENA * Math.max(0, c.peakBytes - c.inputBytes) + WEIGHT_COPIES * weightBytes + SESSION_BYTES;

export function estimateJob(cost: ModelCost, job: JobShape): JobEstimate {
  const d = cost.denoiser;
  const factor = cost.vae ? vaeScaleFactor(cost.vae.config) : 1;
  const side = Math.max(1, Math.round(job.size / factor));
  const batch = job.guided ? 2 * job.count : job.count;
  const den = traced(
    cost,
    `denoiser ${batch} ${side}`,
    {
      sample: { shape: [batch, d.geometry.inChannels, side, side] },
      timestep: { shape: [batch] },
      ...d.condInputs(batch),
    },
    ({ sample, timestep, ...cond }, scope) => d.forward(scope, sample!, timestep!, cond),
  );
  let graphBytes = graphMemory(den, cost.denoiserWeightBytes);
  let modelBytes = cost.denoiserWeightBytes;
  let macs = job.steps * den.macs;
  if (cost.controlnetWeightBytes > 0) {
    // the ControlNet runs in the U-Net's graph: a copy of its encoder, whose residuals stay alive until
    // the decoder adds them (taken as half the U-Net's working set and MACs, not traced)
    graphBytes +=
      WEIGHT_COPIES * cost.controlnetWeightBytes + 0.5 * ARENA * Math.max(0, den.peakBytes - den.inputBytes);
    modelBytes += cost.controlnetWeightBytes;
    macs += 0.5 * job.steps * den.macs;
  }
  if (cost.vae) {
    const vae = cost.vae;
    // decoded in slices (AutoencoderKL.decode): one graph for the slice, run for every slice
    const slice = Math.min(job.count, DEFAULT_SLICE_SIZE);
    const dec = traced(
      cost,
      `vae ${slice} ${side}`,
      { z: { shape: [slice, vae.config.latentChannels, side, side] } },
      ({ z }, scope) => vaeDecode(scope, vae.config, z!),
    );
    graphBytes += graphMemory(dec, vae.weightBytes);
    modelBytes += vae.weightBytes;
    // the final images, and x_t and x̂0 at every step (the studio's previews)
    macs += (1 + 2 * job.steps) * dec.macs * Math.ceil(job.count / slice);
  }
  if (cost.text) {
    const t = cost.text;
    const rows = 2 * job.count;
    // per token: the residual stream and its norm, q/k/v, the MLP's hidden layer, one row of scores per head
    const peak = 4 * rows * t.tokens * (4 * t.hidden + t.intermediate + t.heads * t.tokens);
    graphBytes += ARENA * peak + WEIGHT_COPIES * t.weightBytes + SESSION_BYTES;
    modelBytes += t.weightBytes;
    macs += (rows * t.tokens * t.weightBytes) / 4;
  }
  return { graphBytes, modelBytes, macs };
}
