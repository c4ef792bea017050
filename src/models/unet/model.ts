/**
 * `UNet2DModel`: diffusers' UNet2DModel on the diffuse engine. It holds a config and a parameter map
 * (diffusers' names), traces `unet2d` once per input shape into an ONNX graph whose inputs are the
 * sample, the timesteps and the class labels, with the weights embedded as constants (ONNX Runtime
 * then pre-packs the convolution weights: ~25% faster than weights fed per run), and reads and writes
 * diffusers model folders. Replacing a value in `params` is noticed at the next `forward`, which
 * compiles the graphs again for the new weights.
 *
 *   const unet = await UNet2DModel.fromPretrained(dir);
 *   const eps = await unet.forward(x, 999, { classLabels: [3] });
 *   await unet.savePretrained(out, { dtype: "F16" });
 */
import { compileGraph, trace } from "../../runtime/compile.ts";
import type { SessionOptions } from "../../runtime/options.ts";
import type { CompiledGraph } from "../../runtime/session.ts";
import { type DataOf, formatShape, HostTensor } from "../../tensor/host.ts";
import { countParams, initParams, ParamScope, type ParamSpec, type Params } from "../../tensor/params.ts";
import { Rng } from "../../tensor/rng.ts";
import {
  classConditioning,
  type DiffusersConfig,
  resolveUNetConfig,
  timeEmbedDim,
  type UNet2DConfig,
  unetConfigToDiffusers,
} from "./config.ts";
import {
  checkWeights,
  readUNetConfig,
  readUNetWeights,
  type SaveOptions,
  writeUNetPretrained,
} from "./pretrained.ts";
import { classLabelSpec, unet2d, unetParamSpecs } from "./unet.ts";

/** A host tensor or a plain `{ data, shape }`. */
export type TensorLike<D extends "float32" | "int64" = "float32"> =
  | HostTensor<D>
  | { readonly data: DataOf[D]; readonly shape: readonly number[] };

export interface ModelOptions {
  /** ONNX Runtime options for the compiled graphs (threads, execution providers). */
  readonly session?: SessionOptions;
}

export interface FromConfigOptions extends ModelOptions {
  /** Seed of the initial weights (default 0). */
  readonly seed?: number;
}

export interface FromPretrainedOptions extends ModelOptions {
  /** Read diffusion_pytorch_model.<variant>.safetensors (e.g. "fp16"). */
  readonly variant?: string;
}

export interface UNetCallOptions {
  /** Class ids (num_class_embeds), class timesteps (class_embed_type "timestep") or [N, T] vectors ("identity"). */
  readonly classLabels?: readonly number[] | HostTensor;
}

export class UNet2DModel {
  private readonly graphs = new Map<string, Promise<CompiledGraph>>();
  /** The weights the compiled graphs embed (the `params` values when they were compiled). */
  private compiledWith: Params | null = null;

  private constructor(
    /** The typed config (camelCase). */
    readonly typedConfig: UNet2DConfig,
    /** Weights by diffusers' dotted names, in diffusers' state-dict order. Replace values (not their data in place) to swap weights. */
    readonly params: Params,
    private readonly specs: readonly ParamSpec[],
    private readonly session: SessionOptions,
  ) {}

  /** A freshly initialized model (PyTorch's default initialization), from a diffusers config.json object or typed fields. */
  static fromConfig(
    config: DiffusersConfig | Partial<UNet2DConfig>,
    opts: FromConfigOptions = {},
  ): UNet2DModel {
    const cfg = resolveUNetConfig(config);
    const specs = unetParamSpecs(cfg);
    return new UNet2DModel(cfg, initParams(specs, new Rng(opts.seed ?? 0)), specs, opts.session ?? {});
  }

  /** A model from given weights (checked against the config's names and shapes). */
  static fromParams(
    config: DiffusersConfig | Partial<UNet2DConfig>,
    params: Params,
    opts: ModelOptions = {},
  ): UNet2DModel {
    const cfg = resolveUNetConfig(config);
    const specs = unetParamSpecs(cfg);
    return new UNet2DModel(
      cfg,
      checkWeights(specs, params, "UNet2DModel.fromParams"),
      specs,
      opts.session ?? {},
    );
  }

  /** Loads a diffusers UNet2DModel folder (config.json + diffusion_pytorch_model.safetensors, F32/F16/BF16). */
  static async fromPretrained(dir: string, opts: FromPretrainedOptions = {}): Promise<UNet2DModel> {
    const cfg = readUNetConfig(dir);
    const specs = unetParamSpecs(cfg);
    const params = readUNetWeights(dir, specs, opts.variant);
    return new UNet2DModel(cfg, params, specs, opts.session ?? {});
  }

  /** The config as diffusers writes it (snake_case keys, `_class_name`, `_diffusers_version`). */
  get config(): DiffusersConfig {
    return unetConfigToDiffusers(this.typedConfig);
  }

  /** Number of scalar parameters. */
  get numParams(): number {
    return countParams(this.specs);
  }

  /** Writes config.json and diffusion_pytorch_model.safetensors (F32 by default, or F16/BF16). */
  async savePretrained(dir: string, opts: SaveOptions = {}): Promise<void> {
    writeUNetPretrained(dir, this.typedConfig, this.params, opts);
  }

  /**
   * Runs the network: sample [N, C, H, W]; timestep a number (every sample), N numbers or a host
   * tensor of 1 or N values. Timesteps are used as given, fractions included (diffusers truncates a
   * Python float to an int; pass integers for its behaviour). Returns [N, out_channels, H, W].
   */
  async forward(
    sample: TensorLike,
    timestep: number | readonly number[] | HostTensor,
    opts: UNetCallOptions = {},
  ): Promise<HostTensor<"float32">> {
    const x = HostTensor.from<"float32">(sample);
    if (x.dtype !== "float32" || x.shape.length !== 4) {
      throw new Error(
        `UNet2DModel.forward: sample must be a float32 [N, C, H, W] tensor, got ${x.dtype} ${formatShape(x.shape)}`,
      );
    }
    const n = x.shape[0]!;
    const feeds: Record<string, HostTensor> = { sample: x, timestep: this.timesteps(timestep, n) };
    const labels = this.labels(opts.classLabels, n);
    if (labels) feeds["class_labels"] = labels;
    const graph = await this.graphFor(x.shape);
    const out = await graph.run(feeds);
    return out["out"] as HostTensor<"float32">;
  }

  private timesteps(t: number | readonly number[] | HostTensor, n: number): HostTensor<"float32"> {
    const values = typeof t === "number" ? [t] : t instanceof HostTensor ? t.toArray() : [...t];
    if (values.length !== 1 && values.length !== n) {
      throw new Error(
        `UNet2DModel.forward: got ${values.length} timesteps for a batch of ${n}; pass 1 or ${n}`,
      );
    }
    if (values.some((v) => !Number.isFinite(v)))
      throw new Error(`UNet2DModel.forward: timesteps must be finite, got ${values}`);
    return new HostTensor(
      Float32Array.from({ length: n }, (_, i) => values[values.length === 1 ? 0 : i]!),
      [n],
    );
  }

  private labels(given: UNetCallOptions["classLabels"], n: number): HostTensor | undefined {
    const kind = classConditioning(this.typedConfig);
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
    const spec = classLabelSpec(this.typedConfig, n)!;
    const values = given instanceof HostTensor ? given.toArray() : [...given];
    const want = spec.shape.reduce((a, b) => a * b, 1);
    if (values.length !== want) {
      throw new Error(
        `UNet2DModel.forward: classLabels must hold ${want} values (${formatShape(spec.shape)}), got ${values.length}`,
      );
    }
    if (kind === "table") {
      const k = this.typedConfig.numClassEmbeds!;
      const bad = values.find((v) => !Number.isInteger(v) || v < 0 || v >= k);
      if (bad !== undefined)
        throw new Error(
          `UNet2DModel.forward: class label ${bad} is outside 0..${k - 1} (num_class_embeds ${k})`,
        );
      return HostTensor.int64(values, spec.shape);
    }
    return new HostTensor(
      Float32Array.from(values),
      kind === "identity" ? [n, timeEmbedDim(this.typedConfig)] : [n],
    );
  }

  /** Releases the compiled graphs (they are compiled again on the next `forward`). */
  dispose(): void {
    for (const g of this.graphs.values()) g.then((c) => c.dispose()).catch(() => {});
    this.graphs.clear();
    this.compiledWith = null;
  }

  /** Whether every value in `params` is the one the compiled graphs embed. */
  private compiledWithCurrentWeights(): boolean {
    const seen = this.compiledWith;
    if (!seen || seen.size !== this.params.size) return false;
    for (const [k, v] of this.params) if (seen.get(k) !== v) return false;
    return true;
  }

  /** The compiled graph for one sample shape (traced and compiled on first use, then cached). */
  private graphFor(shape: readonly number[]): Promise<CompiledGraph> {
    if (!this.compiledWithCurrentWeights()) {
      this.dispose();
      this.compiledWith = new Map(this.params);
    }
    const weights = this.compiledWith!;
    const key = shape.join("x");
    let g = this.graphs.get(key);
    if (!g) {
      const cfg = this.typedConfig;
      const n = shape[0]!;
      const ls = classLabelSpec(cfg, n);
      const { graph, outputs } = trace(
        {
          sample: { shape },
          timestep: { shape: [n] },
          ...(ls ? { class_labels: { shape: ls.shape, dtype: ls.dtype } } : {}),
        },
        (inp, graph) => {
          const scope = ParamScope.frozen(graph, weights);
          const out = unet2d(scope, cfg, inp["sample"]!, inp["timestep"]!, inp["class_labels"]);
          return { out };
        },
      );
      g = compileGraph(graph, outputs, { ...this.session, cache: false });
      g.catch(() => this.graphs.delete(key));
      this.graphs.set(key, g);
    }
    return g;
  }
}
