/**
 * Checkpoints of an autoencoder run, written atomically as the denoiser runs' (checkpoint.ts: the
 * folder is built aside and renamed into place):
 *
 *   checkpoint/vae/                      the autoencoder (a diffusers AutoencoderKL folder)
 *   checkpoint/vae_ema/                  its EMA, when the run keeps one
 *   checkpoint/discriminator.safetensors the PatchGAN's weights, when it has started
 *   checkpoint/optimizer.safetensors     AdamW moments: adam_m/<name>, adam_v/<name>, the
 *                                        discriminator's under adam_m/discriminator.<name>, …
 *   checkpoint/trainer_state.json        step, the config's hash, the discriminator's step and the
 *                                        adaptive GAN weight (what step k + 1 needs to continue exactly)
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { recoverReplacedDir, replaceDirAtomicAsync, writeJsonAtomic } from "../io/atomic.ts";
import { readSafetensors, writeSafetensors } from "../io/safetensors.ts";
import { readWeights, writePretrained } from "../models/pretrained.ts";
import { AUTOENCODER_KL_CLASS_NAME, resolveVaeConfig, vaeConfigToDiffusers } from "../models/vae/config.ts";
import type { HostTensor } from "../tensor/host.ts";
import { checkParams, type ParamSpec, type Params } from "../tensor/params.ts";
import type { TrainState } from "./train-step.ts";
import { type VaeTrainConfig, vaeConfigHash } from "./vae-config.ts";
import { DISC_PREFIX } from "./vae-objective.ts";

export interface VaeTrainerState {
  step: number;
  configHash: string;
  /** The discriminator's optimizer step (null before it starts). */
  discStep: number | null;
  /** λ for the next generator step. */
  ganWeight: number;
}

export interface VaeCheckpoint {
  readonly vae: TrainState;
  readonly disc: TrainState | null;
  readonly ganWeight: number;
}

const DISC_FILE = "discriminator.safetensors";

function moments(state: TrainState, prefix: string, into: Map<string, HostTensor>): void {
  for (const [k, v] of state.m) into.set(`adam_m/${prefix}${k}`, v);
  for (const [k, v] of state.v) into.set(`adam_v/${prefix}${k}`, v);
}

export async function saveVaeCheckpoint(
  runDir: string,
  cfg: VaeTrainConfig,
  ck: VaeCheckpoint,
): Promise<void> {
  await replaceDirAtomicAsync(join(runDir, "checkpoint"), async (tmp) => {
    const config = vaeConfigToDiffusers(resolveVaeConfig(cfg.model));
    writePretrained(join(tmp, "vae"), config, ck.vae.params);
    if (ck.vae.ema) writePretrained(join(tmp, "vae_ema"), config, ck.vae.ema);
    const opt = new Map<string, HostTensor>();
    moments(ck.vae, "", opt);
    if (ck.disc) {
      writeSafetensors(join(tmp, DISC_FILE), ck.disc.params);
      moments(ck.disc, `${DISC_PREFIX}.`, opt);
    }
    writeSafetensors(join(tmp, "optimizer.safetensors"), opt);
    const ts: VaeTrainerState = {
      step: ck.vae.step,
      configHash: vaeConfigHash(cfg),
      discStep: ck.disc?.step ?? null,
      ganWeight: ck.ganWeight,
    };
    writeJsonAtomic(join(tmp, "trainer_state.json"), ts);
  });
}

/** The moments of `specs` (under `prefix`) from the optimizer file's tensors. */
function readMoments(
  opt: ReadonlyMap<string, HostTensor>,
  specs: readonly ParamSpec[],
  prefix: string,
  path: string,
): { m: Params; v: Params } {
  const m: Params = new Map();
  const v: Params = new Map();
  for (const s of specs) {
    const mi = opt.get(`adam_m/${prefix}${s.name}`);
    const vi = opt.get(`adam_v/${prefix}${s.name}`);
    if (!mi || !vi) throw new Error(`checkpoint ${path} lacks the moments of ${prefix}${s.name}`);
    m.set(s.name, mi as HostTensor<"float32">);
    v.set(s.name, vi as HostTensor<"float32">);
  }
  return { m, v };
}

/** The last checkpoint of a run, or null when there is none. Errors name the damaged file. */
export function loadVaeCheckpoint(
  runDir: string,
  cfg: VaeTrainConfig,
  vaeSpecs: readonly ParamSpec[],
  discSpecs: readonly ParamSpec[] | null,
  /** Weights the checkpoint holds but the run does not train (a frozen encoder): not read. */
  frozen: ReadonlySet<string> = new Set(),
): VaeCheckpoint | null {
  const dir = join(runDir, "checkpoint");
  recoverReplacedDir(dir);
  const statePath = join(dir, "trainer_state.json");
  if (!existsSync(statePath)) return null;
  let ts: VaeTrainerState;
  try {
    ts = JSON.parse(readFileSync(statePath, "utf8")) as VaeTrainerState;
  } catch (e) {
    throw new Error(
      `checkpoint ${statePath} is damaged (${(e as Error).message}); delete the checkpoint folder to start over`,
    );
  }
  if (ts.configHash !== vaeConfigHash(cfg)) {
    throw new Error(
      `the run in ${runDir} was started with a different config; resume with the same config, or train into a new --out folder (or pass --overwrite)`,
    );
  }
  const optPath = join(dir, "optimizer.safetensors");
  const opt = readSafetensors(optPath).tensors;
  const read = (sub: string) =>
    readWeights(join(dir, sub), AUTOENCODER_KL_CLASS_NAME, vaeSpecs, { skipKey: (k) => frozen.has(k) });
  const vae: TrainState = {
    params: read("vae"),
    ...readMoments(opt, vaeSpecs, "", optPath),
    ema: existsSync(join(dir, "vae_ema")) ? read("vae_ema") : null,
    step: ts.step,
  };
  let disc: TrainState | null = null;
  if (ts.discStep !== null && discSpecs) {
    const params = readSafetensors(join(dir, DISC_FILE)).tensors as Params;
    checkParams(discSpecs, params, `checkpoint ${join(dir, DISC_FILE)}`);
    disc = {
      params,
      ...readMoments(opt, discSpecs, `${DISC_PREFIX}.`, optPath),
      ema: null,
      step: ts.discStep,
    };
  }
  return { vae, disc, ganWeight: ts.ganWeight };
}
