/**
 * DiTTransformer2DModel's registry entry. Class labels 0..num_embeds_ada_norm−1 are the classes; the
 * label num_embeds_ada_norm is the "no class" row diffusers adds for classifier-free guidance (DiT's
 * condition dropout), which is also what `DiTPipeline` feeds as the unconditional half.
 */
import type { Conditioning } from "../../diffusion/conditioning.ts";
import type { InputSpec } from "../../runtime/compile.ts";
import { HostTensor } from "../../tensor/host.ts";
import type { DenoiserDef } from "../registry.ts";
import { DIT_SCHEMA, type DiTConfig, outChannelsOf } from "./config.ts";
import { dit, ditParamSpecs } from "./dit.ts";

/** The labels of a batch of n as the int64 feed, checked against the table (null label included). */
export function ditLabelFeed(
  cfg: DiTConfig,
  labels: readonly number[] | HostTensor | undefined,
  n: number,
): HostTensor {
  if (labels === undefined) {
    throw new Error(
      `DiTTransformer2DModel.forward: DiT is class-conditional; pass { classLabels } (one per sample; ${cfg.numEmbedsAdaNorm} is "no class")`,
    );
  }
  const values = labels instanceof HostTensor ? labels.toArray() : [...labels];
  if (values.length !== n) {
    throw new Error(`DiTTransformer2DModel.forward: got ${values.length} class labels for a batch of ${n}`);
  }
  const k = cfg.numEmbedsAdaNorm;
  const bad = values.find((v) => !Number.isInteger(v) || v < 0 || v > k);
  if (bad !== undefined) {
    throw new Error(
      `DiTTransformer2DModel.forward: class label ${bad} is outside 0..${k} (num_embeds_ada_norm ${k} classes, and ${k} for "no class")`,
    );
  }
  return HostTensor.int64(values, [n]);
}

function labelsOf(cond: Conditioning): readonly number[] {
  if (cond.kind === "class") return cond.labels;
  throw new Error(`DiTTransformer2DModel takes class labels, not a "${cond.kind}" conditioning`);
}

export const DIT_DEF: DenoiserDef<DiTConfig> = {
  className: "DiTTransformer2DModel",
  component: "transformer",
  pipelineClass: "DiTPipeline",
  schema: DIT_SCHEMA,
  paramSpecs: ditParamSpecs,
  geometry: (c) => ({
    inChannels: c.inChannels,
    outChannels: outChannelsOf(c),
    sampleSize: c.sampleSize,
    multipleOf: c.patchSize,
  }),
  conditioning: (c) => ({ kind: "class", numClasses: c.numEmbedsAdaNorm, nullLabel: c.numEmbedsAdaNorm }),
  condInputs: (_c, n): Record<string, InputSpec> => ({ class_labels: { shape: [n], dtype: "int64" } }),
  condFeeds: (c, cond) => {
    const labels = labelsOf(cond);
    return { class_labels: ditLabelFeed(c, labels, labels.length) };
  },
  forward: (scope, c, sample, timestep, cond) => {
    const labels = cond["class_labels"];
    if (!labels) throw new Error("dit: DiT is class-conditional; the graph needs class_labels");
    return dit(scope, c, sample, timestep, labels);
  },
};
