/**
 * LoRA adapters (Hu et al. 2021) as a trained component of a run: A and B of each targeted layer of a
 * frozen base, A from PyTorch's default init and B = 0 (so step 0 is the base model), checkpointed as
 * one safetensors file. Used by `diffuse finetune` (finetune-task.ts) and by LCM-LoRA distillation
 * (lcm-lora.ts); the trained adapters are exported as diffusers' `pytorch_lora_weights.safetensors`
 * (models/lora writeLoraFile).
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { readSafetensors, writeSafetensors } from "../io/safetensors.ts";
import type { LoraLayer } from "../models/lora/index.ts";
import { loraNames } from "../nn/lora.ts";
import type { HostTensor } from "../tensor/host.ts";
import { init, type ParamSpec, type Params } from "../tensor/params.ts";
import type { TrainComponent } from "./checkpoint.ts";

/** The adapter's name in the parameter names (`<layer>.lora_A.default.weight`: PEFT's default adapter). */
export const LORA_ADAPTER = "default";
/** The file a LoRA run exports (what diffusers' save_lora_weights writes and load_lora_weights reads). */
export const LORA_WEIGHTS_NAME = "pytorch_lora_weights.safetensors";
const ADAPTER_FILE = "adapter.safetensors";

/** A component's LoRA adapters: A and B of each targeted layer, checkpointed as one safetensors file. */
export function loraComponent(
  name: string,
  prefix: string,
  base: Params,
  layers: readonly string[],
  rank: number,
): TrainComponent {
  const specs: ParamSpec[] = [];
  for (const l of layers) {
    const w = base.get(`${l}.weight`)!;
    const [out, ...rest] = w.shape as [number, ...number[]];
    const n = loraNames(l, LORA_ADAPTER);
    const fanIn = rest.reduce((a, b) => a * b, 1);
    specs.push({ name: n.a, shape: [rank, ...rest], init: init.torchDefault(fanIn) });
    specs.push({
      name: n.b,
      shape: w.shape.length === 4 ? [out, rank, 1, 1] : [out, rank],
      init: init.zeros(),
    });
  }
  return {
    name,
    prefix,
    specs,
    write: (dir, params) => {
      mkdirSync(dir, { recursive: true });
      writeSafetensors(join(dir, ADAPTER_FILE), params);
    },
    read: (dir) => readSafetensors(join(dir, ADAPTER_FILE)).tensors as Params,
  };
}

/** The adapters of a LoRA component as layers (for a model's LoraAdapters or a LoRA file). */
export function adapterLayers(
  layers: readonly string[],
  params: ReadonlyMap<string, HostTensor<"float32">>,
  alpha: number,
): Map<string, LoraLayer> {
  const out = new Map<string, LoraLayer>();
  for (const l of layers) {
    const n = loraNames(l, LORA_ADAPTER);
    out.set(l, { a: params.get(n.a)!, b: params.get(n.b)!, alpha });
  }
  return out;
}
