/**
 * Training checkpoints, written atomically: the whole `checkpoint/` folder is built aside and renamed
 * into place, so a crash mid-write leaves the previous checkpoint, never a half-written one.
 *
 *   checkpoint/<component>/      raw weights (diffusers layout; unet/, transformer/, text_encoder/, …)
 *   checkpoint/<component>_ema/  EMA weights (diffusers layout)
 *
 * A run trains one or more components (a denoiser; a denoiser and its text encoder): the train state
 * holds them all in one parameter map, each component's names under its own prefix.
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
import type { ParamSpec, Params } from "../tensor/params.ts";
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

/** One trained component of a run: its folder, its parameters' prefix in the train state, its file format. */
export interface TrainComponent {
  /** Its folder in a pipeline and in the checkpoint ("unet", "text_encoder"). */
  readonly name: string;
  /** The prefix of its parameters in the train state ("" for a run that trains a denoiser alone). */
  readonly prefix: string;
  /** Its parameters, unprefixed. */
  readonly specs: readonly ParamSpec[];
  /** Writes unprefixed weights (and the config) as the component's folder. */
  write(dir: string, params: Params): void | Promise<void>;
  /** Reads a folder `write` made; errors name the file. */
  read(dir: string): Params | Promise<Params>;
  /**
   * Values its folder holds that are never trained (a denoiser's persistent buffers: SD3's sincos
   * position table), unprefixed and not among `specs`: the train step takes them as constants
   * (`componentBuffers`), `componentParams` adds them back, `read` leaves them out.
   */
  readonly buffers?: Params;
}

/**
 * The denoiser of a run as a component (unprefixed: the names a denoiser-only run has always used).
 * Its buffers (the values its config determines: DenoiserDef.buffers) are not trained: they are left
 * out of its specs and kept as `buffers`.
 */
export function denoiserComponent(cfg: TrainConfig, prefix = ""): TrainComponent {
  const model = resolveDenoiser(cfg.model);
  const all = model.paramSpecs();
  const buffers = model.buffers?.() ?? new Map<string, HostTensor<"float32">>();
  const specs = all.filter((s) => !buffers.has(s.name));
  return {
    name: model.component,
    prefix,
    specs,
    ...(buffers.size > 0 ? { buffers } : {}),
    write: (dir, params) => writePretrained(dir, model.config, params),
    read: (dir) => {
      const params = readWeights(
        dir,
        model.className,
        all,
        model.renameKey ? { renameKey: model.renameKey } : {},
      );
      for (const k of buffers.keys()) params.delete(k); // the config's values are used, as at the start
      return params;
    },
  };
}

/** A component's own weights out of the train state's map (prefix removed), its buffers added. */
export function componentParams(c: TrainComponent, all: Params): Params {
  const out: Params = new Map();
  for (const s of c.specs) {
    const v = all.get(c.prefix + s.name);
    if (!v) throw new Error(`the train state lacks ${c.prefix}${s.name}`);
    out.set(s.name, v);
  }
  for (const [k, v] of c.buffers ?? []) out.set(k, v);
  return out;
}

/** Every component's buffers, prefixed: constants of the train step, never trained. */
export function componentBuffers(components: readonly TrainComponent[]): Params {
  const out: Params = new Map();
  for (const c of components) for (const [k, v] of c.buffers ?? []) out.set(c.prefix + k, v);
  return out;
}

/** Every component's parameter specs, prefixed, in one list (the train step's parameters). */
export function prefixedSpecs(components: readonly TrainComponent[]): ParamSpec[] {
  return components.flatMap((c) => c.specs.map((s) => ({ ...s, name: c.prefix + s.name })));
}

export async function saveCheckpoint(
  runDir: string,
  cfg: TrainConfig,
  state: TrainState,
  components: readonly TrainComponent[] = [denoiserComponent(cfg)],
): Promise<void> {
  await replaceDirAtomicAsync(join(runDir, "checkpoint"), async (tmp) => {
    for (const c of components) {
      await c.write(join(tmp, c.name), componentParams(c, state.params));
      if (state.ema) await c.write(join(tmp, `${c.name}_ema`), componentParams(c, state.ema));
    }
    const opt = new Map<string, HostTensor>();
    for (const [k, v] of state.m) opt.set(`adam_m/${k}`, v);
    for (const [k, v] of state.v) opt.set(`adam_v/${k}`, v);
    writeSafetensors(join(tmp, "optimizer.safetensors"), opt);
    const ts: TrainerState = { step: state.step, configHash: configHash(cfg) };
    writeJsonAtomic(join(tmp, "trainer_state.json"), ts);
  });
}

/**
 * Refuses to resume a run whose checkpoint is past `steps` (training.steps lowered since): nothing
 * would be trained, yet the run's config.json would be rewritten with the lower count and the run
 * reported done. A damaged trainer_state.json is left for the checkpoint loader to report.
 */
export function refuseStepsBelowCheckpoint(runDir: string, steps: number): void {
  const dir = join(runDir, "checkpoint");
  recoverReplacedDir(dir);
  const path = join(dir, "trainer_state.json");
  if (!existsSync(path)) return;
  let step: unknown;
  try {
    step = (JSON.parse(readFileSync(path, "utf8")) as { step?: unknown }).step;
  } catch {
    return;
  }
  if (typeof step === "number" && step > steps) {
    throw new Error(
      `the run in ${runDir} has already trained ${step} steps, more than training.steps ${steps}; to train it further pass --steps N with N > ${step}, or start over with --overwrite or a new --out folder`,
    );
  }
}

/** The last checkpoint of a run, or null when there is none. Errors name the damaged file. */
export async function loadCheckpoint(
  runDir: string,
  cfg: TrainConfig,
  components: readonly TrainComponent[] = [denoiserComponent(cfg)],
): Promise<TrainState | null> {
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
  const specs = prefixedSpecs(components);
  const read = async (suffix: string): Promise<Params> => {
    const all: Params = new Map();
    for (const c of components)
      for (const [k, v] of await c.read(join(dir, c.name + suffix))) all.set(c.prefix + k, v);
    return all;
  };
  const params = await read("");
  const ema = components.every((c) => existsSync(join(dir, `${c.name}_ema`))) ? await read("_ema") : null;
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
