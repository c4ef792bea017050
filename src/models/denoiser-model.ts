/**
 * What every denoiser class (UNet2DModel, DiTTransformer2DModel, …) shares, generic over its registry
 * entry: a typed config and a parameter map (diffusers' names), `fromPretrained`/`savePretrained` of
 * diffusers folders, and a traced graph per input shape with the weights embedded as constants (ONNX
 * Runtime then pre-packs them: ~25% faster than weights fed per run). Replacing a value in `params`
 * is noticed at the next call, which compiles the graphs again for the new weights.
 *
 * `denoise(x, t, cond)` is the class-independent entry pipelines use; each class adds `forward` with
 * diffusers' keyword arguments (camelCase, as an options object).
 */
import type { Conditioning } from "../diffusion/conditioning.ts";
import type { InputSpec } from "../runtime/compile.ts";
import type { SessionOptions } from "../runtime/options.ts";
import type { CompiledGraph } from "../runtime/session.ts";
import { type DataOf, formatShape, HostTensor } from "../tensor/host.ts";
import { countParams, initParams, type ParamSpec, type Params } from "../tensor/params.ts";
import { Rng } from "../tensor/rng.ts";
import {
  type DiffusersConfig,
  fieldsToDiffusers,
  limitsWith,
  type ModelLimits,
  resolveFields,
} from "./config-fields.ts";
import { LoraAdapters } from "./lora/adapters.ts";
import {
  checkWeights,
  parseConfigAt,
  readConfigJson,
  readWeights,
  type SaveOptions,
  writePretrained,
} from "./pretrained.ts";
import { type BoundDenoiser, bindDenoiser, type DenoiserDef } from "./registry.ts";
import { WeightGraphs } from "./weight-graphs.ts";

/** A host tensor or a plain `{ data, shape }`. */
export type TensorLike<D extends "float32" | "int64" = "float32"> =
  | HostTensor<D>
  | { readonly data: DataOf[D]; readonly shape: readonly number[] };

/** A timestep: one number for the whole batch, one per sample, or a tensor of 1 or N values. */
export type Timesteps = number | readonly number[] | HostTensor;

export interface ModelOptions {
  /** ONNX Runtime options for the compiled graphs (threads, execution providers). */
  readonly session?: SessionOptions;
  /** Raises (or lowers) the limits the config is checked against before anything is built (e.g. `{ maxParams: 1e10 }`). */
  readonly limits?: Partial<ModelLimits>;
}

export interface FromConfigOptions extends ModelOptions {
  /** Seed of the initial weights (default 0). */
  readonly seed?: number;
}

export interface FromPretrainedOptions extends ModelOptions {
  /** Read diffusion_pytorch_model.<variant>.safetensors (e.g. "fp16"). */
  readonly variant?: string;
}

/** The parts a model is made of, built from a config (and weights). */
export interface ModelParts<C> {
  readonly config: C;
  readonly params: Params;
  readonly session: SessionOptions;
}

/** Fresh weights for a config (the class's initialisers; each parameter from its own stream of the seed). */
export function initParts<C>(
  def: DenoiserDef<C>,
  config: DiffusersConfig | Partial<C>,
  opts: FromConfigOptions = {},
): ModelParts<C> {
  const c = resolveFields(def.schema, config, limitsWith(opts.limits));
  return {
    config: c,
    params: initParams(def.paramSpecs(c), new Rng(opts.seed ?? 0)),
    session: opts.session ?? {},
  };
}

/** Given weights, checked against the config's names and shapes. */
export function paramParts<C>(
  def: DenoiserDef<C>,
  config: DiffusersConfig | Partial<C>,
  params: Params,
  opts: ModelOptions = {},
): ModelParts<C> {
  const c = resolveFields(def.schema, config, limitsWith(opts.limits));
  const checked = checkWeights(def.paramSpecs(c), params, `${def.className}.fromParams`);
  return { config: c, params: checked, session: opts.session ?? {} };
}

/** A diffusers model folder of this class (config.json + weights, F32/F16/BF16). */
export function pretrainedParts<C>(
  def: DenoiserDef<C>,
  dir: string,
  opts: FromPretrainedOptions = {},
): ModelParts<C> {
  const json = readConfigJson(dir, def.className, def.component);
  const c = parseConfigAt(dir, json, (j) => resolveFields(def.schema, j, limitsWith(opts.limits)));
  const params = readWeights(dir, def.className, def.paramSpecs(c), {
    ...(opts.variant ? { variant: opts.variant } : {}),
    ...(def.renameKey ? { renameKey: def.renameKey } : {}),
  });
  return { config: c, params, session: opts.session ?? {} };
}

/** A model class's static side: its registry entry and constructor (what the static constructors need). */
export interface ModelClass<C, T> {
  readonly def: DenoiserDef<C>;
  new (def: DenoiserDef<C>, parts: ModelParts<C>): T;
}

export class DenoiserModel<C> {
  private readonly graphs: WeightGraphs;
  /** The typed config (camelCase). */
  readonly typedConfig: C;
  /** Weights by diffusers' dotted names, in diffusers' state-dict order. Replace values (not their data in place) to swap weights. */
  readonly params: Params;
  protected readonly session: SessionOptions;
  /** LoRA adapters on this model's layers (`loadLoraWeights`, models/lora). */
  readonly lora: LoraAdapters;

  /** Prefer the static constructors (`fromConfig`, `fromParams`, `fromPretrained`), which check what they are given. */
  constructor(
    readonly def: DenoiserDef<C>,
    parts: ModelParts<C>,
  ) {
    this.typedConfig = parts.config;
    this.params = parts.params;
    this.session = parts.session;
    this.lora = new LoraAdapters(this.params, def.className);
    this.graphs = new WeightGraphs(this.params, this.session, this.lora);
  }

  /** The component prefix of this model's keys in diffusers' LoRA files ("unet", "transformer"). */
  get loraComponent(): string {
    return this.def.component;
  }

  get loraOwner(): string {
    return this.def.className;
  }

  /** A freshly initialized model (the class's initialisers), from a diffusers config.json object or typed fields. */
  static fromConfig<C, T>(
    this: ModelClass<C, T>,
    config: DiffusersConfig | Partial<C>,
    opts: FromConfigOptions = {},
  ): T {
    // biome-ignore lint/complexity/noThisInStatic: `this` is the subclass called (UNet2DModel.fromConfig builds a UNet2DModel)
    return new this(this.def, initParts(this.def, config, opts));
  }

  /** A model from given weights (checked against the config's names and shapes). */
  static fromParams<C, T>(
    this: ModelClass<C, T>,
    config: DiffusersConfig | Partial<C>,
    params: Params,
    opts: ModelOptions = {},
  ): T {
    // biome-ignore lint/complexity/noThisInStatic: `this` is the subclass called (UNet2DModel.fromConfig builds a UNet2DModel)
    return new this(this.def, paramParts(this.def, config, params, opts));
  }

  /** Loads a diffusers model folder of this class (config.json + diffusion_pytorch_model.safetensors, F32/F16/BF16). */
  static async fromPretrained<C, T>(
    this: ModelClass<C, T>,
    dir: string,
    opts: FromPretrainedOptions = {},
  ): Promise<T> {
    // biome-ignore lint/complexity/noThisInStatic: `this` is the subclass called (UNet2DModel.fromConfig builds a UNet2DModel)
    return new this(this.def, pretrainedParts(this.def, dir, opts));
  }

  /** The config as diffusers writes it (snake_case keys, `_class_name`, `_diffusers_version`). */
  get config(): DiffusersConfig {
    return fieldsToDiffusers(this.def.schema, this.typedConfig);
  }

  /** The class-independent view of this model (conditioning, geometry, traced forward). */
  get bound(): BoundDenoiser {
    return bindDenoiser(this.def, this.typedConfig);
  }

  /** The parameter specs (names, shapes, initialisers) of this config. */
  get specs(): ParamSpec[] {
    return this.def.paramSpecs(this.typedConfig);
  }

  /** Number of scalar parameters. */
  get numParams(): number {
    return countParams(this.params);
  }

  /** Writes config.json and diffusion_pytorch_model.safetensors (F32 by default, or F16/BF16). */
  async savePretrained(dir: string, opts: SaveOptions = {}): Promise<void> {
    writePretrained(dir, this.config, this.params, opts);
  }

  /** The network on a conditioning: what pipelines and guidance call. Returns [N, out_channels, H, W]. */
  async denoise(x: TensorLike, t: Timesteps, cond: Conditioning): Promise<HostTensor<"float32">> {
    return this.run(x, t, this.def.condFeeds(this.typedConfig, cond));
  }

  /** Runs the graph for a sample, its timesteps and the conditioning feeds. */
  protected async run(
    sample: TensorLike,
    timestep: Timesteps,
    condFeeds: Record<string, HostTensor>,
  ): Promise<HostTensor<"float32">> {
    const x = HostTensor.from<"float32">(sample);
    const name = this.def.className;
    if (x.dtype !== "float32" || x.shape.length !== 4) {
      throw new Error(
        `${name}.forward: sample must be a float32 [N, C, H, W] tensor, got ${x.dtype} ${formatShape(x.shape)}`,
      );
    }
    const geo = this.def.geometry(this.typedConfig);
    if (x.shape[1] !== geo.inChannels) {
      throw new Error(
        `${name}.forward: sample must be [N, ${geo.inChannels}, H, W] (this model's in_channels), got ${formatShape(x.shape)}`,
      );
    }
    const n = x.shape[0]!;
    const feeds: Record<string, HostTensor> = {
      sample: x,
      timestep: timestepFeed(name, timestep, n),
      ...condFeeds,
    };
    const graph = await this.graphFor(x.shape, condFeeds);
    const out = await graph.run(feeds);
    return out["out"] as HostTensor<"float32">;
  }

  /** Releases the compiled graphs (they are compiled again on the next call). */
  dispose(): void {
    this.graphs.dispose();
  }

  /**
   * The compiled graph for one sample shape and set of conditioning feeds (traced and compiled on
   * first use, then cached). The graph's conditioning inputs are the feeds' names, shapes and dtypes
   * (`condFeeds` checked them): so the cache keys on the text length and on optional inputs (ControlNet
   * residuals, timestep_cond) as well as on the batch.
   */
  private graphFor(shape: readonly number[], condFeeds: Record<string, HostTensor>): Promise<CompiledGraph> {
    const condSpecs: Record<string, InputSpec> = {};
    for (const k of Object.keys(condFeeds).sort()) {
      condSpecs[k] = { shape: condFeeds[k]!.shape, dtype: condFeeds[k]!.dtype };
    }
    const key = [
      shape.join("x"),
      ...Object.entries(condSpecs).map(([k, s]) => `${k}:${s.dtype}:${s.shape.join("x")}`),
    ].join("|");
    const n = shape[0]!;
    return this.graphs.get(
      key,
      { sample: { shape }, timestep: { shape: [n] }, ...condSpecs },
      (inp, scope) => {
        const { sample, timestep, ...cond } = inp;
        return { out: this.def.forward(scope, this.typedConfig, sample!, timestep!, cond) };
      },
    );
  }
}

/** Timesteps as the graph's float32 [N] input: 1 value (broadcast) or N, each finite. */
export function timestepFeed(name: string, t: Timesteps, n: number): HostTensor<"float32"> {
  const values = typeof t === "number" ? [t] : t instanceof HostTensor ? t.toArray() : [...t];
  if (values.length !== 1 && values.length !== n) {
    throw new Error(`${name}.forward: got ${values.length} timesteps for a batch of ${n}; pass 1 or ${n}`);
  }
  if (values.some((v) => !Number.isFinite(v)))
    throw new Error(`${name}.forward: timesteps must be finite, got ${values}`);
  return new HostTensor(
    Float32Array.from({ length: n }, (_, i) => values[values.length === 1 ? 0 : i]!),
    [n],
  );
}
