/**
 * LCM-LoRA (Luo et al. 2023, "LCM-LoRA: A Universal Stable-Diffusion Acceleration Module"): the
 * consistency distillation of train/lcm.ts with the student θ = W + (α/r)·B·A — the teacher's weights W
 * frozen, rank-r adapters A, B (LoRA, Hu et al. 2021; nn/lora.ts) on the targeted layers trained. B
 * starts at 0, so at step 0 the student is the teacher. diffusers' train_lcm_distill_lora_* scripts
 * target every attention, projection, feed-forward and resnet layer at rank 64.
 *
 * The three networks of the loss share the one copy of W the run holds (the teacher's, on the host):
 *   student  f_θ   W + (α/r)·B·A   W fed as frozen inputs `<name>`, A and B the step's parameters
 *   teacher  F     W               inputs `teacher.<name>`, fed the same W
 *   target   f_θ⁻  W + (α/r)·B⁻·A⁻ inputs `target.<name>` (W) and `target.<adapter>` (A⁻, B⁻)
 * None of them embeds W in the graph: each is fed each step from the same host tensors, which ONNX
 * Runtime reads in place on the CPU (one 100 MB array fed to three inputs adds nothing to the RSS;
 * `diffuse finetune` feeds its frozen base for the same reason: constants are kept and pre-packed by
 * ONNX Runtime, docs/benchmarks.md). On a GPU the three are uploaded each step. Only A and B have
 * gradients, AdamW moments and an EMA. The target's adapters are the EMA of the student's
 * (lcm.target "ema", as LCM's target network), or the student's own with no gradient ("online": what
 * diffusers' LCM-LoRA script does).
 *
 * The run exports the adapters as diffusers' `pytorch_lora_weights.safetensors` (beside model/;
 * `diffuse sample --model TEACHER --lora FILE --scheduler lcm` or diffusers' load_lora_weights) and
 * model/, the teacher with them fused in at scale 1 (a pipeline like a full student's).
 */
import { join } from "node:path";
import { LoraAdapters, type LoraLayer, loraLayerNames, writeLoraFile } from "../models/lora/index.ts";
import { loraTargets, UNET_LORA_TARGETS } from "../nn/lora.ts";
import type { HostTensor } from "../tensor/host.ts";
import { initParams, type LoraPlan, type LoraSite, ParamScope, type Params } from "../tensor/params.ts";
import { Rng } from "../tensor/rng.ts";
import type { DistillLora } from "./distill-config.ts";
import { type LcmPlan, TARGET_PREFIX } from "./lcm.ts";
import { type LcmNetworks, lcmLossOf, scopedNetwork, targetFeeds } from "./lcm-loss.ts";
import type { LcmStudentParts } from "./lcm-student.ts";
import { adapterLayers, LORA_ADAPTER, LORA_WEIGHTS_NAME, loraComponent } from "./lora-component.ts";
import type { LossFn } from "./train-step.ts";

/** Graph inputs of the teacher's weights in an LCM-LoRA step: `teacher.<parameter name>`. */
export const TEACHER_PREFIX = "teacher.";

/** diffusers' LCM-LoRA targets (train_lcm_distill_lora_sd_wds.py): every linear and convolution of the blocks. */
const SD_LCM_LORA_TARGETS = [
  ...["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"],
  ...["conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj"],
];

/**
 * The default targets by the teacher's class: a UNet2DConditionModel's are diffusers'; a UNet2DModel
 * has no transformer blocks (no proj_in, proj_out or feed-forward), the rest alike. Another class
 * gets the attention projections.
 */
export const LCM_LORA_TARGETS: Readonly<Record<string, readonly string[]>> = {
  UNet2DConditionModel: SD_LCM_LORA_TARGETS,
  UNet2DModel: SD_LCM_LORA_TARGETS.filter((t) => !/^(proj_|ff\.)/.test(t)),
};

/** The targets of a run: the config's, or the teacher class's default. */
export function lcmLoraTargets(className: string, given: DistillLora["targets"]): readonly string[] | string {
  return given ?? LCM_LORA_TARGETS[className] ?? UNET_LORA_TARGETS;
}

/**
 * The LCM-LoRA training-step loss: the student over the step's scope (the frozen base and the plan's
 * trainable adapters: compile the step with `frozen`, `lora` and frozenAs "inputs"), the teacher over
 * inputs `teacher.<name>`, the target network over `target.<name>` with the same adapters at
 * `target.<adapter name>` (feed them with `lcmLoraFeeds`).
 */
export function lcmLoraLoss(plan: LcmPlan, lora: LoraPlan): LossFn {
  // the target's layers are at `target.<layer>`: the same adapters as the student's
  const underTarget: LoraPlan = (layer, shape) =>
    layer.startsWith(TARGET_PREFIX) ? lora(layer.slice(TARGET_PREFIX.length), shape) : [];
  return (scope, b) => {
    const g = scope.graph;
    const nets: LcmNetworks = {
      student: scopedNetwork(plan.model, scope),
      teacher: scopedNetwork(plan.model, ParamScope.root(g).sub(TEACHER_PREFIX.slice(0, -1))),
      target: scopedNetwork(
        plan.model,
        ParamScope.root(g, { lora: underTarget }).sub(TARGET_PREFIX.slice(0, -1)),
      ),
    };
    return lcmLossOf(nets, b, plan.settings);
  };
}

/** The teacher's and the target's weight feeds: W under both prefixes, the target's adapters A⁻, B⁻. */
export function lcmLoraFeeds(base: Params, targetAdapters: Params): Record<string, HostTensor> {
  const out = targetFeeds(new Map([...base, ...targetAdapters]));
  for (const [k, v] of base) out[TEACHER_PREFIX + k] = v;
  return out;
}

/** The base weights with adapters fused in at scale 1: W + (α/r)·B·A on each adapted layer (LoraAdapters.fuse). */
export function fusedWeights(base: Params, layers: ReadonlyMap<string, LoraLayer>): Params {
  const out: Params = new Map(base);
  const adapters = new LoraAdapters(out, "the LCM-LoRA student");
  adapters.add(LORA_ADAPTER, layers);
  adapters.fuse();
  return out;
}

/**
 * The LoRA student of a teacher: the adapters as the run's one component, the loss, the frozen base
 * and the plan, the adapters' start (A from its initialiser with the run's seed, B = 0), the target's
 * feeds, the fused weights, and the LoRA file written beside model/.
 */
export function loraStudent(
  plan: LcmPlan,
  base: Params,
  lora: DistillLora,
  opts: { online: boolean; seed: number; runDir: string },
): LcmStudentParts {
  const bound = plan.model;
  const targets = lcmLoraTargets(bound.className, lora.targets);
  const layers = loraLayerNames(base).filter(loraTargets(targets));
  if (layers.length === 0)
    throw new Error(
      `lora.targets ${JSON.stringify(targets)} match no linear or convolution layer of the ${bound.className} teacher`,
    );
  const { rank } = lora;
  const alpha = lora.alpha ?? rank;
  const component = loraComponent(`${bound.component}_lora`, "", base, layers, rank);
  const site: LoraSite = { adapter: LORA_ADAPTER, rank, scale: alpha / rank };
  const targeted = new Set(layers);
  const loraPlan: LoraPlan = (layer) => (targeted.has(layer) ? [site] : []);
  const fixed = lcmLoraFeeds(base, new Map());
  const adaptersOf = (params: ReadonlyMap<string, HostTensor<"float32">>) =>
    adapterLayers(layers, params, alpha);
  return {
    train: {
      components: [component],
      loss: lcmLoraLoss(plan, loraPlan),
      initial: initParams(component.specs, new Rng(opts.seed).fold("lora")),
      frozen: base,
      frozenAs: "inputs",
      lora: loraPlan,
    },
    stateFeeds: (state) => ({ ...fixed, ...targetFeeds(opts.online ? state.params : state.ema!) }),
    weights: (params) => fusedWeights(base, adaptersOf(params)),
    exportBeside: (params) =>
      writeLoraFile(join(opts.runDir, LORA_WEIGHTS_NAME), { [bound.component]: adaptersOf(params) }),
    how: { method: "lcm-lora", rank, alpha, targets, layers: layers.length },
    description: `LoRA rank ${rank} (alpha ${alpha}) on ${layers.length} layers`,
  };
}
