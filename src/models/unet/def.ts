/**
 * UNet2DModel's registry entry: its config table, parameters, forward, and how class labels (the
 * only conditioning it takes) become graph inputs. diffuse trains class-conditional U-Nets with the
 * last label of the table as "no class" (condition dropout), so `num_class_embeds` K means K − 1 real
 * classes; a pipeline folder's diffuse.json may say otherwise.
 */
import type { Conditioning } from "../../diffusion/conditioning.ts";
import type { InputSpec } from "../../runtime/compile.ts";
import { formatShape, HostTensor } from "../../tensor/host.ts";
import type { DenoiserDef } from "../registry.ts";
import { classConditioning, timeEmbedDim, UNET2D_SCHEMA, type UNet2DConfig } from "./config.ts";
import { renameLegacyKey } from "./pretrained.ts";
import { classLabelSpec, unet2d, unetParamSpecs } from "./unet.ts";

/**
 * The class-label feed for a batch of n: ids (int64) for a class table, float32 values for
 * class_embed_type "timestep", [N, T] vectors for "identity"; undefined for an unconditional model.
 */
export function unetLabelFeed(
  cfg: UNet2DConfig,
  given: readonly number[] | HostTensor | undefined,
  n: number,
): HostTensor | undefined {
  const kind = classConditioning(cfg);
  if (kind === "none") {
    if (given !== undefined) {
      throw new Error(
        "UNet2DModel.forward: classLabels given, but this model has no class embedding (num_class_embeds is null)",
      );
    }
    return undefined;
  }
  if (given === undefined) {
    throw new Error(
      "UNet2DModel.forward: this model is class-conditional; pass { classLabels } (one per sample)",
    );
  }
  const spec = classLabelSpec(cfg, n)!;
  const values = given instanceof HostTensor ? given.toArray() : [...given];
  const want = spec.shape.reduce((a, b) => a * b, 1);
  if (values.length !== want) {
    throw new Error(
      `UNet2DModel.forward: classLabels must hold ${want} values (${formatShape(spec.shape)}), got ${values.length}`,
    );
  }
  if (kind === "table") {
    const k = cfg.numClassEmbeds!;
    const bad = values.find((v) => !Number.isInteger(v) || v < 0 || v >= k);
    if (bad !== undefined)
      throw new Error(
        `UNet2DModel.forward: class label ${bad} is outside 0..${k - 1} (num_class_embeds ${k})`,
      );
    return HostTensor.int64(values, spec.shape);
  }
  return new HostTensor(Float32Array.from(values), kind === "identity" ? [n, timeEmbedDim(cfg)] : [n]);
}

function labelsOf(cond: Conditioning): readonly number[] | undefined {
  if (cond.kind === "class") return cond.labels;
  if (cond.kind === "none") return undefined;
  throw new Error(`UNet2DModel takes class labels, not a ${cond.kind} conditioning`);
}

export const UNET2D_DEF: DenoiserDef<UNet2DConfig> = {
  className: "UNet2DModel",
  component: "unet",
  pipelineClass: "DDPMPipeline",
  schema: UNET2D_SCHEMA,
  renameKey: renameLegacyKey,
  paramSpecs: unetParamSpecs,
  geometry: (c) => ({
    inChannels: c.inChannels,
    outChannels: c.outChannels,
    sampleSize:
      typeof c.sampleSize === "number" ? c.sampleSize : c.sampleSize === null ? null : c.sampleSize[0],
    multipleOf: 2 ** (c.blockOutChannels.length - 1),
  }),
  conditioning: (c) => {
    const kind = classConditioning(c);
    if (kind === "none") return { kind: "none" };
    if (kind === "table") {
      const k = c.numClassEmbeds!;
      return { kind: "class", numClasses: k - 1, nullLabel: k - 1 };
    }
    return { kind: "class", numClasses: null, nullLabel: null };
  },
  condInputs: (c, n): Record<string, InputSpec> => {
    const ls = classLabelSpec(c, n);
    return ls ? { class_labels: { shape: ls.shape, dtype: ls.dtype } } : {};
  },
  condFeeds: (c, cond): Record<string, HostTensor> => {
    const n = cond.kind === "none" ? cond.batch : cond.kind === "class" ? cond.labels.length : 0;
    const feed = unetLabelFeed(c, labelsOf(cond), n);
    return feed ? { class_labels: feed } : {};
  },
  forward: (scope, c, sample, timestep, cond, opts) =>
    unet2d(scope, c, sample, timestep, cond["class_labels"], opts ?? {}),
};
