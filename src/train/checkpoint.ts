/**
 * Training checkpoints, written atomically: the whole `checkpoint/` folder is built aside and renamed
 * into place, so a crash mid-write leaves the previous checkpoint, never a half-written one.
 *
 *   checkpoint/<component>/      raw weights (diffusers layout; unet/, transformer/, … by model class)
 *   checkpoint/<component>_ema/  EMA weights (diffusers layout)
 *   checkpoint/optimizer.safetensors   AdamW moments (adam_m/<name>, adam_v/<name>)
 *   checkpoint/trainer_state.json      step and the resolved config's hash
 */
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { recoverReplacedDir, replaceDirAtomicAsync, writeJsonAtomic } from "../io/atomic.ts";
import { readSafetensors, writeSafetensors } from "../io/safetensors.ts";
import { readWeights, writePretrained } from "../models/pretrained.ts";
import { resolveDenoiser } from "../models/registry.ts";
import type { HostTensor } from "../tensor/host.ts";
import type { Params } from "../tensor/params.ts";
import type { TrainConfig } from "./config.ts";
import type { TrainState } from "./train-step.ts";

export interface TrainerState {
  step: number;
  configHash: string;
}

/** A hash of the parts of the config that must not change across a resume. */
export function configHash(c: TrainConfig): string {
  const { output: _o, ...rest } = c;
  const { steps: _s, threads: _t, ...training } = rest.training;
  return createHash("sha256")
    .update(JSON.stringify({ ...rest, training }))
    .digest("hex")
    .slice(0, 16);
}

export async function saveCheckpoint(runDir: string, cfg: TrainConfig, state: TrainState): Promise<void> {
  const model = resolveDenoiser(cfg.model);
  await replaceDirAtomicAsync(join(runDir, "checkpoint"), async (tmp) => {
    writePretrained(join(tmp, model.component), model.config, state.params);
    if (state.ema) writePretrained(join(tmp, `${model.component}_ema`), model.config, state.ema);
    const opt = new Map<string, HostTensor>();
    for (const [k, v] of state.m) opt.set(`adam_m/${k}`, v);
    for (const [k, v] of state.v) opt.set(`adam_v/${k}`, v);
    writeSafetensors(join(tmp, "optimizer.safetensors"), opt);
    const ts: TrainerState = { step: state.step, configHash: configHash(cfg) };
    writeJsonAtomic(join(tmp, "trainer_state.json"), ts);
  });
}

/** The last checkpoint of a run, or null when there is none. Errors name the damaged file. */
export function loadCheckpoint(runDir: string, cfg: TrainConfig): TrainState | null {
  const dir = join(runDir, "checkpoint");
  recoverReplacedDir(dir);
  if (!existsSync(join(dir, "trainer_state.json"))) return null;
  let ts: TrainerState;
  try {
    ts = JSON.parse(readFileSync(join(dir, "trainer_state.json"), "utf8")) as TrainerState;
  } catch (e) {
    throw new Error(
      `checkpoint ${dir}/trainer_state.json is damaged (${(e as Error).message}); delete the checkpoint folder to start over`,
    );
  }
  if (ts.configHash !== configHash(cfg)) {
    throw new Error(
      `the run in ${runDir} was started with a different config; resume with the same config, or train into a new --out folder (or pass --overwrite)`,
    );
  }
  const model = resolveDenoiser(cfg.model);
  const specs = model.paramSpecs();
  const read = (sub: string) =>
    readWeights(
      join(dir, sub),
      model.className,
      specs,
      model.renameKey ? { renameKey: model.renameKey } : {},
    );
  const params = read(model.component);
  const ema = existsSync(join(dir, `${model.component}_ema`)) ? read(`${model.component}_ema`) : null;
  const opt = readSafetensors(join(dir, "optimizer.safetensors")).tensors;
  const m: Params = new Map();
  const v: Params = new Map();
  for (const s of specs) {
    const mi = opt.get(`adam_m/${s.name}`);
    const vi = opt.get(`adam_v/${s.name}`);
    if (!mi || !vi) throw new Error(`checkpoint ${dir}/optimizer.safetensors lacks the moments of ${s.name}`);
    m.set(s.name, mi as HostTensor<"float32">);
    v.set(s.name, vi as HostTensor<"float32">);
  }
  return { params, m, v, ema, step: ts.step };
}
