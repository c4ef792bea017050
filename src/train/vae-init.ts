/**
 * Where an autoencoder run starts (`training.init_from`) and what it trains (`training.trainable`):
 * a fresh init, or the weights of an existing AutoencoderKL — all of them trained, or only the decoder
 * side with the encoder side frozen. Freezing the encoder keeps every latent, and so the diffusion
 * models trained on them, valid while the decoder learns to reconstruct better (Stable Diffusion's
 * ft-MSE VAE was made this way: its decoder fine-tuned on an MSE-weighted loss).
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { AutoencoderKLConfig } from "../models/vae/config.ts";
import { AutoencoderKL } from "../models/vae/model.ts";
import { vaeParamSpecs } from "../models/vae/vae.ts";
import { resolveModelDir } from "../pipelines/pipeline-dir.ts";
import type { SessionOptions } from "../runtime/options.ts";
import type { Params } from "../tensor/params.ts";

/** The encoder side of an AutoencoderKL (what "decoder" training freezes): encoder.*, quant_conv.*. */
const isEncoderSide = (name: string): boolean =>
  name.startsWith("encoder.") || name.startsWith("quant_conv.");

/**
 * The autoencoder named by `training.init_from` — an AutoencoderKL folder, a pipeline folder (its
 * vae/), a VAE run folder (its model/) or a bundled model — checked to have the run's architecture.
 */
export async function loadInitVae(
  from: string,
  c: AutoencoderKLConfig,
  session: SessionOptions,
): Promise<AutoencoderKL> {
  const dir = resolveModelDir(from);
  const run = join(dir, "model");
  const folder =
    existsSync(join(run, "config.json")) || existsSync(join(run, "model_index.json")) ? run : dir;
  let vae: AutoencoderKL;
  try {
    vae = await AutoencoderKL.fromPretrained(folder, { session });
  } catch (e) {
    throw new Error(`training.init_from "${from}": ${(e as Error).message}`);
  }
  const want = new Map(vaeParamSpecs(c).map((s) => [s.name, s.shape.join("×")]));
  const have = new Map(vaeParamSpecs(vae.config).map((s) => [s.name, s.shape.join("×")]));
  const differ = [...new Set([...want.keys(), ...have.keys()])].filter((k) => want.get(k) !== have.get(k));
  if (differ.length > 0 || vae.config.actFn !== c.actFn) {
    const k = differ[0];
    const what =
      k === undefined
        ? `act_fn is "${vae.config.actFn}" there, "${c.actFn}" in the config`
        : `${k} is ${have.get(k) ?? "missing"} there, ${want.get(k) ?? "absent"} in the config` +
          (differ.length > 1 ? ` (and ${differ.length - 1} more weights)` : "");
    throw new Error(
      `training.init_from "${from}" is another AutoencoderKL than the config's model: ${what}; copy its config.json into the run config's "model"`,
    );
  }
  return vae;
}

/** The weights of `all` that "decoder" training freezes (the encoder side), or null for "all". */
export function frozenSide(all: Params, trainable: "all" | "decoder"): Params | null {
  if (trainable === "all") return null;
  return new Map([...all].filter(([k]) => isEncoderSide(k)));
}
