/**
 * The model registry: diffusers class names → what diffuse needs to build, load, save, train and
 * sample a denoiser of that class. Each entry (`DenoiserDef`) holds the config's field table, the
 * parameter specs (names, shapes, initialisers) a config implies, the traced forward, and how a
 * `Conditioning` becomes the graph's inputs. Everything above the models (training, pipelines, the
 * CLI and the studio) works from a config's `_class_name` through this table, never from a class.
 *
 * Adding a backbone = writing its def (models/<name>/def.ts) and one line in `DENOISERS`; see
 * docs/architecture.md, with DiT as the worked example.
 */
import type { Conditioning } from "../diffusion/conditioning.ts";
import type { InputSpec } from "../runtime/compile.ts";
import type { HostTensor } from "../tensor/host.ts";
import type { ParamScope, ParamSpec, Params } from "../tensor/params.ts";
import type { Tensor } from "../tensor/symbolic.ts";
import {
  ConfigError,
  type ConfigSchema,
  type DiffusersConfig,
  fieldsToDiffusers,
  parseFields,
  resolveFields,
} from "./config-fields.ts";
import { DIT_DEF } from "./dit/def.ts";
import { SD3_DEF } from "./mmdit/def.ts";
import { UNET2D_DEF } from "./unet/def.ts";
import { UNET2D_COND_DEF } from "./unet-cond/def.ts";

/** What a denoiser is conditioned on, as its config implies. */
export type ConditioningSpec =
  | { readonly kind: "none" }
  | {
      readonly kind: "class";
      /** Real classes 0..numClasses−1 (null: labels that are not a class table, e.g. timestep-like). */
      readonly numClasses: number | null;
      /** The label trained as "no class" (classifier-free guidance), or null when there is none. */
      readonly nullLabel: number | null;
    }
  | {
      readonly kind: "text";
      /** Width of the token embeddings [N, L, dim] (cross_attention_dim). */
      readonly dim: number;
      /** Width of a pooled text vector the model also takes (SDXL, SD3), or null/absent for none. */
      readonly pooledDim?: number | null;
    };

/**
 * Sizes of the conditioning a graph is traced for, beyond the batch (graph inputs have static
 * shapes). Absent fields take the model's defaults.
 */
export interface CondSizes {
  /** Tokens per text embedding (default: the model's, 77 — CLIP's context — for UNet2DConditionModel). */
  readonly textLength?: number;
}

/** The sample a denoiser takes and gives. */
export interface Geometry {
  readonly inChannels: number;
  /** Output channels: inChannels, or twice that for a network that also predicts its variance. */
  readonly outChannels: number;
  /** Nominal side (null: any). */
  readonly sampleSize: number | null;
  /** Height and width must be multiples of this. */
  readonly multipleOf: number;
}

export interface DenoiserForwardOptions {
  /** U[0, 1) noise for training dropout at site `index` (see unet.ts); absent: no dropout. */
  readonly dropoutNoise?: (shape: readonly number[], index: number) => Tensor;
}

/** One registered denoiser class. */
export interface DenoiserDef<C> {
  readonly className: string;
  /** Its folder in a diffusers pipeline ("unet", "transformer"). */
  readonly component: string;
  /** The pipeline class diffusers writes for this denoiser alone (DDPMPipeline, DiTPipeline). */
  readonly pipelineClass: string;
  readonly schema: ConfigSchema<C>;
  /** Renames a stored weight key to the current name (old checkpoints). */
  readonly renameKey?: (name: string) => string;
  paramSpecs(c: C): ParamSpec[];
  /**
   * Initial values that the config determines rather than a random draw: tensors diffusers keeps as
   * persistent buffers in the weights file (SD3's sincos position table). They are parameters (a
   * stored value is used as stored); a fresh model takes these values instead of its spec's initialiser.
   */
  buffers?(c: C): Params;
  geometry(c: C): Geometry;
  conditioning(c: C): ConditioningSpec;
  /** Graph inputs of the conditioning (besides `sample` and `timestep`) for a batch of n (and the text length). */
  condInputs(c: C, n: number, sizes?: CondSizes): Record<string, InputSpec>;
  /** Feeds for those inputs; errors name the class, the bad value and what is allowed. */
  condFeeds(c: C, cond: Conditioning): Record<string, HostTensor>;
  /** The traced forward: sample [N, C, H, W], timestep float32 [N], the conditioning inputs by name. */
  forward(
    scope: ParamScope,
    c: C,
    sample: Tensor,
    timestep: Tensor,
    cond: Readonly<Record<string, Tensor | undefined>>,
    opts?: DenoiserForwardOptions,
  ): Tensor;
}

/** A def with its config: the class-independent view the rest of diffuse works with. */
export interface BoundDenoiser {
  readonly className: string;
  readonly component: string;
  readonly pipelineClass: string;
  /** The config as diffusers writes it. */
  readonly config: DiffusersConfig;
  readonly geometry: Geometry;
  readonly conditioning: ConditioningSpec;
  readonly renameKey?: (name: string) => string;
  paramSpecs(): ParamSpec[];
  /** Initial values the config determines (see DenoiserDef.buffers); apply them after a random init. */
  buffers?(): Params;
  condInputs(n: number, sizes?: CondSizes): Record<string, InputSpec>;
  condFeeds(cond: Conditioning): Record<string, HostTensor>;
  forward(
    scope: ParamScope,
    sample: Tensor,
    timestep: Tensor,
    cond: Readonly<Record<string, Tensor | undefined>>,
    opts?: DenoiserForwardOptions,
  ): Tensor;
}

export function bindDenoiser<C>(def: DenoiserDef<C>, c: C): BoundDenoiser {
  return {
    className: def.className,
    component: def.component,
    pipelineClass: def.pipelineClass,
    config: fieldsToDiffusers(def.schema, c),
    geometry: def.geometry(c),
    conditioning: def.conditioning(c),
    ...(def.renameKey ? { renameKey: def.renameKey } : {}),
    paramSpecs: () => def.paramSpecs(c),
    ...(def.buffers ? { buffers: () => def.buffers!(c) } : {}),
    condInputs: (n, sizes) => def.condInputs(c, n, sizes),
    condFeeds: (cond) => def.condFeeds(c, cond),
    forward: (scope, sample, t, cond, opts) => def.forward(scope, c, sample, t, cond, opts),
  };
}

/** Every registered denoiser class, by diffusers class name. */
export const DENOISERS = {
  UNet2DModel: bindable(UNET2D_DEF),
  DiTTransformer2DModel: bindable(DIT_DEF),
  UNet2DConditionModel: bindable(UNET2D_COND_DEF),
  SD3Transformer2DModel: bindable(SD3_DEF),
} as const;

export type DenoiserClassName = keyof typeof DENOISERS;

/** A def, erased to what the registry needs: parse a diffusers config and bind it. */
interface Bindable {
  readonly className: string;
  readonly component: string;
  readonly pipelineClass: string;
  parse(json: DiffusersConfig): BoundDenoiser;
  resolve(config: DiffusersConfig | Record<string, unknown>): BoundDenoiser;
}

function bindable<C>(def: DenoiserDef<C>): Bindable {
  return {
    className: def.className,
    component: def.component,
    pipelineClass: def.pipelineClass,
    parse: (json) => bindDenoiser(def, parseFields(def.schema, json)),
    resolve: (config) => bindDenoiser(def, resolveFields(def.schema, config as Partial<C>)),
  };
}

export const DENOISER_CLASS_NAMES: readonly string[] = Object.keys(DENOISERS);

/** The registry entry of a class name; an unknown name is an error that lists the known ones. */
export function denoiserClass(className: unknown, where = "config"): Bindable {
  const entry =
    typeof className === "string" && Object.hasOwn(DENOISERS, className)
      ? DENOISERS[className as DenoiserClassName]
      : undefined;
  if (!entry) {
    throw new ConfigError(
      className === undefined
        ? `${where} has no "_class_name"; add one of ${DENOISER_CLASS_NAMES.join(", ")}`
        : `${where}: "_class_name" ${JSON.stringify(className)} is not a denoiser diffuse supports; use one of ${DENOISER_CLASS_NAMES.join(", ")}`,
    );
  }
  return entry;
}

/**
 * A diffusers config.json object of any registered denoiser, parsed and bound by its `_class_name`
 * (a config without one is a UNet2DModel's, as diffuse wrote them before there were others).
 */
export function resolveDenoiser(json: DiffusersConfig, where = "model config"): BoundDenoiser {
  const cls = json["_class_name"] ?? "UNet2DModel";
  return denoiserClass(cls, where).parse(json);
}
