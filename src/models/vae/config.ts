/**
 * The AutoencoderKL configuration: diffusers' `config.json` keys ↔ a typed `AutoencoderKLConfig`, with
 * diffusers' defaults (v0.40 `AutoencoderKL.__init__`). The KL-regularized autoencoder of latent
 * diffusion (Rombach et al. 2022, §3 and App. G): an encoder of `DownEncoderBlock2D`s to the mean and
 * log-variance of a diagonal Gaussian over `latent_channels` channels, a decoder of `UpDecoderBlock2D`s
 * back to pixels, and the `scaling_factor` (and `shift_factor`) pipelines apply to its latents.
 *
 * Unknown keys are ignored as diffusers does; keys of other autoencoders that would change the network
 * (VQ codebooks, temporal decoders) are refused; each error names the key, the value and what is allowed.
 */
import {
  BOUNDS,
  bool,
  type ConfigSchema,
  configFromFields,
  type DiffusersConfig,
  type FieldTable,
  fail,
  fieldsToDiffusers,
  int,
  list,
  type ModelLimits,
  modelLimits,
  nullable,
  num,
  oneOf,
  type Parse,
  parseFields,
  positive,
  resolveFields,
} from "../config-fields.ts";
import { convParams, normParams, resnetParams, selfAttentionParams } from "../param-estimate.ts";

export interface AutoencoderKLConfig {
  inChannels: number;
  outChannels: number;
  downBlockTypes: readonly "DownEncoderBlock2D"[];
  upBlockTypes: readonly "UpDecoderBlock2D"[];
  blockOutChannels: readonly number[];
  /** Resnets per encoder block (each decoder block has one more). */
  layersPerBlock: number;
  /** The resnets' nonlinearity ("swish" is diffusers' alias of SiLU); the output heads always use SiLU. */
  actFn: "silu" | "swish";
  latentChannels: number;
  normNumGroups: number;
  /** The nominal image size (informative: encode/decode take any size that fits the downsampling). */
  sampleSize: number | readonly [number, number];
  /** Pipelines encode to `(z − shift) · scaling_factor` and decode `z / scaling_factor + shift`. */
  scalingFactor: number;
  shiftFactor: number | null;
  /** Per-channel latent statistics some pipelines normalize with instead (SDXL-style; informative here). */
  latentsMean: readonly number[] | null;
  latentsStd: readonly number[] | null;
  /** Whether half-precision pipelines should run this VAE in float32 (informative: diffuse runs float32). */
  forceUpcast: boolean;
  useQuantConv: boolean;
  usePostQuantConv: boolean;
  /** Self-attention in the encoder's and the decoder's mid block. */
  midBlockAddAttention: boolean;
}

export const AUTOENCODER_KL_CLASS_NAME = "AutoencoderKL";

/** The resnets' GroupNorm and attention-norm epsilon: diffusers' Encoder/Decoder fix it at 1e-6. */
export const VAE_NORM_EPS = 1e-6;

const sampleSize: Parse<number | readonly [number, number]> = (v, k) => {
  const side = int(1, BOUNDS.sampleSize);
  if (Array.isArray(v) && v.length === 2) return [side(v[0], `${k}[0]`), side(v[1], `${k}[1]`)];
  return side(v, k);
};

const FIELDS: FieldTable<AutoencoderKLConfig> = {
  inChannels: { key: "in_channels", dflt: 3, parse: int(1, BOUNDS.channels) },
  outChannels: { key: "out_channels", dflt: 3, parse: int(1, BOUNDS.channels) },
  downBlockTypes: {
    key: "down_block_types",
    dflt: ["DownEncoderBlock2D"],
    parse: list(oneOf(["DownEncoderBlock2D"]), BOUNDS.levels),
  },
  upBlockTypes: {
    key: "up_block_types",
    dflt: ["UpDecoderBlock2D"],
    parse: list(oneOf(["UpDecoderBlock2D"]), BOUNDS.levels),
  },
  blockOutChannels: {
    key: "block_out_channels",
    dflt: [64],
    parse: list(int(1, BOUNDS.width), BOUNDS.levels),
  },
  layersPerBlock: { key: "layers_per_block", dflt: 1, parse: int(1, BOUNDS.depth) },
  actFn: { key: "act_fn", dflt: "silu", parse: oneOf(["silu", "swish"]) },
  latentChannels: { key: "latent_channels", dflt: 4, parse: int(1, BOUNDS.channels) },
  normNumGroups: { key: "norm_num_groups", dflt: 32, parse: int(1, BOUNDS.width) },
  sampleSize: { key: "sample_size", dflt: 32, parse: sampleSize },
  scalingFactor: { key: "scaling_factor", dflt: 0.18215, parse: positive },
  shiftFactor: { key: "shift_factor", dflt: null, parse: nullable(num) },
  latentsMean: { key: "latents_mean", dflt: null, parse: nullable(list(num)) },
  latentsStd: { key: "latents_std", dflt: null, parse: nullable(list(positive)) },
  forceUpcast: { key: "force_upcast", dflt: true, parse: bool },
  useQuantConv: { key: "use_quant_conv", dflt: true, parse: bool },
  usePostQuantConv: { key: "use_post_quant_conv", dflt: true, parse: bool },
  midBlockAddAttention: { key: "mid_block_add_attention", dflt: true, parse: bool },
};

/** Checks that the fields fit together (block counts, group counts, latent statistics). */
function validate(c: AutoencoderKLConfig): void {
  const n = c.blockOutChannels.length;
  if (c.downBlockTypes.length !== n) {
    fail("down_block_types", c.downBlockTypes, `${n} entries, one per block_out_channels entry`);
  }
  if (c.upBlockTypes.length !== n) {
    fail("up_block_types", c.upBlockTypes, `${n} entries, one per block_out_channels entry`);
  }
  for (const ch of c.blockOutChannels) {
    if (ch % c.normNumGroups !== 0) {
      fail(
        "norm_num_groups",
        c.normNumGroups,
        `a divisor of every block_out_channels entry (${c.blockOutChannels.join(", ")})`,
      );
    }
  }
  for (const key of ["latentsMean", "latentsStd"] as const) {
    const v = c[key];
    if (v !== null && v.length !== c.latentChannels) {
      fail(FIELDS[key].key, v, `null or ${c.latentChannels} numbers (one per latent channel)`);
    }
  }
}

export const AUTOENCODER_KL_SCHEMA: ConfigSchema<AutoencoderKLConfig> = {
  className: AUTOENCODER_KL_CLASS_NAME,
  fields: FIELDS,
  foreignKeys: ["num_vq_embeddings", "vq_embed_dim", "lookup_from_codebook", "force_upcast_decoder"],
  foreignOwner: "another autoencoder (e.g. VQModel)",
  validate,
  estimateParams: vaeParamEstimate,
  sizeKeys: ["block_out_channels", "layers_per_block"],
};

export const vaeConfigFromDiffusers = (json: DiffusersConfig): AutoencoderKLConfig =>
  parseFields(AUTOENCODER_KL_SCHEMA, json);
export const vaeConfig = (fields: Partial<AutoencoderKLConfig> = {}): AutoencoderKLConfig =>
  configFromFields(AUTOENCODER_KL_SCHEMA, fields);
export const resolveVaeConfig = (
  config: DiffusersConfig | Partial<AutoencoderKLConfig>,
  limits: ModelLimits = modelLimits(),
): AutoencoderKLConfig => resolveFields(AUTOENCODER_KL_SCHEMA, config, limits);
export const vaeConfigToDiffusers = (c: AutoencoderKLConfig): DiffusersConfig =>
  fieldsToDiffusers(AUTOENCODER_KL_SCHEMA, c);

/** How many times the encoder halves the image: one stride-2 step per block but the last. */
export const vaeDownsamplingSteps = (c: AutoencoderKLConfig): number => c.blockOutChannels.length - 1;
/** The spatial factor between pixels and latents, 2^(blocks − 1) (8 for Stable Diffusion's VAE). */
export const vaeScaleFactor = (c: AutoencoderKLConfig): number => 2 ** vaeDownsamplingSteps(c);

/**
 * About how many parameters a config implies (diffusers' AutoencoderKL): the encoder's resnets down to
 * the moments, the quant convolutions, and the decoder's resnets (one more per block) back up — each
 * with its mid block of two resnets and attention — from the fields alone.
 */
export function vaeParamEstimate(c: AutoencoderKLConfig): number {
  const ch = c.blockOutChannels;
  const n = ch.length;
  const first = ch[0]!;
  const last = ch[n - 1]!;
  const mid = 2 * resnetParams(last, last, 0) + (c.midBlockAddAttention ? selfAttentionParams(last) : 0);
  const l = c.latentChannels;
  let total = convParams(c.inChannels, first) + mid + normParams(last) + convParams(last, 2 * l);
  let prev = first;
  for (let i = 0; i < n; i++) {
    const out = ch[i]!;
    for (let k = 0; k < c.layersPerBlock; k++) total += resnetParams(k === 0 ? prev : out, out, 0);
    if (i < n - 1) total += convParams(out, out);
    prev = out;
  }
  if (c.useQuantConv) total += convParams(2 * l, 2 * l, 1);
  if (c.usePostQuantConv) total += convParams(l, l, 1);
  total += convParams(l, last) + mid;
  prev = last;
  for (let i = 0; i < n; i++) {
    const out = ch[n - 1 - i]!;
    for (let k = 0; k <= c.layersPerBlock; k++) total += resnetParams(k === 0 ? prev : out, out, 0);
    if (i < n - 1) total += convParams(out, out);
    prev = out;
  }
  return total + normParams(first) + convParams(first, c.outChannels);
}
