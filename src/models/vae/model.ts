/**
 * `AutoencoderKL`: diffusers' KL autoencoder on the diffuse engine — config, weights by diffusers'
 * names, diffusers folders both ways, and traced graphs (weights embedded as constants) compiled once
 * per input shape.
 *
 *   const vae = await AutoencoderKL.fromPretrained("sd-pipeline");   // a vae/ folder or a pipeline folder
 *   const dist = await vae.encode(images);                            // { mean, logvar, std }
 *   const z = dist.sample(new Rng(0));                                // mean + std·ε
 *   const x = await vae.decode(z);                                    // no scaling inside, as diffusers
 *
 * Large batches are encoded and decoded in slices (diffusers' `enable_slicing`): by default in
 * chunks of DEFAULT_SLICE_SIZE once a batch is larger than that; `enableSlicing(k)` / `{ sliceSize }`
 * choose the chunk; `disableSlicing()` runs whole batches.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { SessionOptions } from "../../runtime/options.ts";
import type { CompiledGraph } from "../../runtime/session.ts";
import { formatShape, HostTensor } from "../../tensor/host.ts";
import * as o from "../../tensor/ops.ts";
import { countParams, type ParamSpec, type Params } from "../../tensor/params.ts";
import { Rng } from "../../tensor/rng.ts";
import type { Tensor } from "../../tensor/symbolic.ts";
import { type DiffusersConfig, limitsWith, type ModelLimits } from "../config-fields.ts";
import {
  CONFIG_NAME,
  checkModelDir,
  checkWeights,
  parseConfigAt,
  readConfigJson,
  readWeights,
  type SaveOptions,
  writePretrained,
} from "../pretrained.ts";
import { renameLegacyKey } from "../unet/pretrained.ts";
import { WeightGraphs } from "../weight-graphs.ts";
import {
  AUTOENCODER_KL_CLASS_NAME,
  type AutoencoderKLConfig,
  resolveVaeConfig,
  vaeConfigToDiffusers,
} from "./config.ts";
import { checkVaeInput, checkVaeLatent, initVae, vaeDecode, vaeEncode, vaeParamSpecs } from "./vae.ts";

/** Batches larger than this are encoded/decoded in slices of this many by default. */
export const DEFAULT_SLICE_SIZE = 16;

/** A float32 tensor or a plain `{ data, shape }`. */
export type ImageLike =
  | HostTensor<"float32">
  | { readonly data: Float32Array; readonly shape: readonly number[] };

/** The posterior N(mean, std²) over latents, each tensor [N, latent, h, w] (diffusers' DiagonalGaussianDistribution). */
export interface LatentDistribution {
  readonly mean: HostTensor<"float32">;
  /** log σ², clamped to [−30, 20] as diffusers. */
  readonly logvar: HostTensor<"float32">;
  /** σ = exp(logvar / 2) */
  readonly std: HostTensor<"float32">;
}

/** A draw z = mean + std·ε, ε ~ N(0, I) from `rng` (diffusers' `latent_dist.sample(generator)`). */
export function sampleLatent(dist: LatentDistribution, rng: Rng): HostTensor<"float32"> {
  const eps = rng.normal(dist.mean.size);
  const m = dist.mean.data;
  const s = dist.std.data;
  const z = new Float32Array(m.length);
  for (let i = 0; i < z.length; i++) z[i] = m[i]! + s[i]! * eps[i]!;
  return new HostTensor(z, dist.mean.shape);
}

/** What `encode` returns: the distribution's tensors, plus `sample(rng)` and `mode()`. */
export class DiagonalGaussian implements LatentDistribution {
  constructor(
    readonly mean: HostTensor<"float32">,
    readonly logvar: HostTensor<"float32">,
    readonly std: HostTensor<"float32">,
  ) {}
  /** mean + std·ε with ε from `rng` (a fresh Rng(0) stream when omitted). */
  sample(rng: Rng = new Rng(0)): HostTensor<"float32"> {
    return sampleLatent(this, rng);
  }
  /** The most likely latent: the mean. */
  mode(): HostTensor<"float32"> {
    return this.mean;
  }
}

export interface VaeModelOptions {
  /** ONNX Runtime options for the compiled graphs (threads, execution providers). */
  readonly session?: SessionOptions;
  /** Raises (or lowers) the limits the config is checked against before anything is built (e.g. `{ maxParams: 1e10 }`). */
  readonly limits?: Partial<ModelLimits>;
}

export interface VaeCallOptions {
  /** Run the batch in chunks of this many (overrides enableSlicing and the default). */
  readonly sliceSize?: number;
}

/** A pipeline folder holds its VAE in vae/; a VAE folder holds config.json itself. */
function vaeFolder(dir: string): string {
  checkModelDir(dir, AUTOENCODER_KL_CLASS_NAME);
  const sub = join(dir, "vae");
  return !existsSync(join(dir, CONFIG_NAME)) && existsSync(join(sub, CONFIG_NAME)) ? sub : dir;
}

export class AutoencoderKL {
  private readonly graphs: WeightGraphs;
  /** Slice size set by enableSlicing (null: the default rule; 0: never slice). */
  private slicing: number | null = null;

  /** Prefer the static constructors, which check what they are given. */
  constructor(
    /** The typed config (camelCase; `diffusersConfig` is the config.json form). */
    readonly config: AutoencoderKLConfig,
    /** Weights by diffusers' names, in state-dict order. Replace values (not their data) to swap weights. */
    readonly params: Params,
    private readonly session: SessionOptions = {},
  ) {
    this.graphs = new WeightGraphs(params, session);
  }

  /** A freshly initialized model (PyTorch's default init), from a diffusers config.json object or typed fields. */
  static fromConfig(
    config: DiffusersConfig | Partial<AutoencoderKLConfig>,
    opts: VaeModelOptions & { readonly seed?: number } = {},
  ): AutoencoderKL {
    const c = resolveVaeConfig(config, limitsWith(opts.limits));
    return new AutoencoderKL(c, initVae(c, new Rng(opts.seed ?? 0)), opts.session);
  }

  /** A model from given weights (checked against the config's names and shapes). */
  static fromParams(
    config: DiffusersConfig | Partial<AutoencoderKLConfig>,
    params: Params,
    opts: VaeModelOptions = {},
  ): AutoencoderKL {
    const c = resolveVaeConfig(config, limitsWith(opts.limits));
    const checked = checkWeights(vaeParamSpecs(c), params, `${AUTOENCODER_KL_CLASS_NAME}.fromParams`);
    return new AutoencoderKL(c, checked, opts.session);
  }

  /**
   * Loads a diffusers AutoencoderKL folder (config.json + diffusion_pytorch_model.safetensors, F32/F16/BF16),
   * or the vae/ folder of a pipeline folder. Old attention names (query/key/value/proj_attn) are renamed.
   */
  static async fromPretrained(
    dir: string,
    opts: VaeModelOptions & { readonly variant?: string } = {},
  ): Promise<AutoencoderKL> {
    const folder = vaeFolder(dir);
    const json = readConfigJson(folder, AUTOENCODER_KL_CLASS_NAME, "vae");
    const c = parseConfigAt(folder, json, (j) => resolveVaeConfig(j, limitsWith(opts.limits)));
    const params = readWeights(folder, AUTOENCODER_KL_CLASS_NAME, vaeParamSpecs(c), {
      ...(opts.variant ? { variant: opts.variant } : {}),
      renameKey: renameLegacyKey,
    });
    return new AutoencoderKL(c, params, opts.session);
  }

  /** The config as diffusers writes it (snake_case keys, `_class_name`, `_diffusers_version`). */
  get diffusersConfig(): DiffusersConfig {
    return vaeConfigToDiffusers(this.config);
  }

  /** Pipelines multiply latents by this after encoding (and divide before decoding). */
  get scalingFactor(): number {
    return this.config.scalingFactor;
  }

  /** Pipelines subtract this before scaling (SD3, Flux), or null. */
  get shiftFactor(): number | null {
    return this.config.shiftFactor;
  }

  get specs(): ParamSpec[] {
    return vaeParamSpecs(this.config);
  }

  get numParams(): number {
    return countParams(this.params);
  }

  /** Writes config.json and diffusion_pytorch_model.safetensors (F32 by default, or F16/BF16). */
  async savePretrained(dir: string, opts: SaveOptions = {}): Promise<void> {
    writePretrained(dir, this.diffusersConfig, this.params, opts);
  }

  /** Encode/decode batches in chunks of `sliceSize` (diffusers' enable_slicing slices by 1). */
  enableSlicing(sliceSize = 1): void {
    if (!Number.isInteger(sliceSize) || sliceSize < 1) {
      throw new Error(`AutoencoderKL.enableSlicing: sliceSize must be an integer ≥ 1, got ${sliceSize}`);
    }
    this.slicing = sliceSize;
  }

  /** Run whole batches, however large. */
  disableSlicing(): void {
    this.slicing = 0;
  }

  /** Encodes images [N, in, H, W] (H, W multiples of 2^(blocks − 1)) to the posterior over latents. */
  async encode(x: ImageLike, opts: VaeCallOptions = {}): Promise<DiagonalGaussian> {
    const t = floatTensor(x, "AutoencoderKL.encode: images");
    checkVaeInput(this.config, t.shape, "AutoencoderKL.encode");
    const parts = await this.sliced(t, opts, (chunk) => this.runGraph("encode", chunk));
    const cat = (k: string) => concatBatch(parts.map((p) => p[k]!));
    return new DiagonalGaussian(cat("mean"), cat("logvar"), cat("std"));
  }

  /** Decodes latents [N, latent, h, w] to images [N, out, h·f, w·f] (no scaling inside, as diffusers). */
  async decode(z: ImageLike, opts: VaeCallOptions = {}): Promise<HostTensor<"float32">> {
    const t = floatTensor(z, "AutoencoderKL.decode: latents");
    checkVaeLatent(this.config, t.shape, "AutoencoderKL.decode");
    const parts = await this.sliced(t, opts, (chunk) => this.runGraph("decode", chunk));
    return concatBatch(parts.map((p) => p["sample"]!));
  }

  /** Releases the compiled graphs (they are compiled again on the next call). */
  dispose(): void {
    this.graphs.dispose();
  }

  /** The batch in chunks (sequentially: each chunk already uses every core). */
  private async sliced(
    t: HostTensor<"float32">,
    opts: VaeCallOptions,
    run: (chunk: HostTensor<"float32">) => Promise<Record<string, HostTensor<"float32">>>,
  ): Promise<Record<string, HostTensor<"float32">>[]> {
    const n = t.shape[0]!;
    const size = opts.sliceSize ?? this.slicing ?? (n > DEFAULT_SLICE_SIZE ? DEFAULT_SLICE_SIZE : 0);
    if (!Number.isInteger(size) || size < 0) {
      throw new Error(`AutoencoderKL: sliceSize must be an integer ≥ 1, got ${size}`);
    }
    if (size === 0 || size >= n) return [await run(t)];
    const out: Record<string, HostTensor<"float32">>[] = [];
    for (let i = 0; i < n; i += size) out.push(await run(sliceBatch(t, i, Math.min(n, i + size))));
    return out;
  }

  private async runGraph(
    kind: "encode" | "decode",
    x: HostTensor<"float32">,
  ): Promise<Record<string, HostTensor<"float32">>> {
    const g = await this.graphFor(kind, x.shape);
    return (await g.run({ x })) as Record<string, HostTensor<"float32">>;
  }

  private graphFor(kind: "encode" | "decode", shape: readonly number[]): Promise<CompiledGraph> {
    const c = this.config;
    return this.graphs.get(
      `${kind}:${shape.join("x")}`,
      { x: { shape } },
      ({ x }, scope): Record<string, Tensor> => {
        if (kind === "decode") return { sample: vaeDecode(scope, c, x!) };
        const { mean, logvar } = vaeEncode(scope, c, x!);
        return { mean, logvar, std: o.exp(o.mul(logvar, 0.5)) }; // σ = exp(logvar / 2)
      },
    );
  }
}

function floatTensor(x: ImageLike, what: string): HostTensor<"float32"> {
  const t = HostTensor.from<"float32">(x);
  if (t.dtype !== "float32" || t.shape.length !== 4) {
    throw new Error(`${what} must be a float32 [N, C, H, W] tensor, got ${t.dtype} ${formatShape(t.shape)}`);
  }
  return t;
}

/** Samples [from, to) of a batch (a view, no copy). */
function sliceBatch(t: HostTensor<"float32">, from: number, to: number): HostTensor<"float32"> {
  const per = t.size / t.shape[0]!;
  return new HostTensor(t.data.subarray(from * per, to * per), [to - from, ...t.shape.slice(1)]);
}

/** Concatenates batches along the first axis. */
function concatBatch(parts: readonly HostTensor<"float32">[]): HostTensor<"float32"> {
  if (parts.length === 1) return parts[0]!;
  const data = new Float32Array(parts.reduce((a, p) => a + p.size, 0));
  let at = 0;
  for (const p of parts) {
    data.set(p.data, at);
    at += p.size;
  }
  const n = parts.reduce((a, p) => a + p.shape[0]!, 0);
  return new HostTensor(data, [n, ...parts[0]!.shape.slice(1)]);
}
