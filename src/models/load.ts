/**
 * `loadModel(dir)`: any registered model folder, built as the class its config.json names
 * (`_class_name`), as diffusers' `AutoModel` does. `modelFromConfig` and `modelFromParams` likewise
 * for a config object.
 */
import type { Params } from "../tensor/params.ts";
import type { DiffusersConfig } from "./config-fields.ts";
import type { FromConfigOptions, FromPretrainedOptions, ModelOptions } from "./denoiser-model.ts";
import { DiTTransformer2DModel } from "./dit/model.ts";
import { SD3Transformer2DModel } from "./mmdit/model.ts";
import { readConfigJson } from "./pretrained.ts";
import { type DenoiserClassName, denoiserClass } from "./registry.ts";
import { UNet2DModel } from "./unet/model.ts";
import { UNet2DConditionModel } from "./unet-cond/model.ts";

export type AnyDenoiserModel =
  | UNet2DModel
  | DiTTransformer2DModel
  | UNet2DConditionModel
  | SD3Transformer2DModel;

interface ModelClass {
  fromPretrained(dir: string, opts?: FromPretrainedOptions): Promise<AnyDenoiserModel>;
  fromConfig(config: DiffusersConfig, opts?: FromConfigOptions): AnyDenoiserModel;
  fromParams(config: DiffusersConfig, params: Params, opts?: ModelOptions): AnyDenoiserModel;
}

/** The model class of every registered denoiser (the compiler refuses a registry entry without one). */
const CLASSES: { readonly [K in DenoiserClassName]: ModelClass } = {
  UNet2DModel,
  DiTTransformer2DModel,
  UNet2DConditionModel,
  SD3Transformer2DModel,
};

function classOf(config: DiffusersConfig, where: string): ModelClass {
  const name = denoiserClass(config["_class_name"] ?? "UNet2DModel", where).className;
  return CLASSES[name as DenoiserClassName];
}

/** Loads a diffusers model folder as the class its config.json names. */
export async function loadModel(dir: string, opts: FromPretrainedOptions = {}): Promise<AnyDenoiserModel> {
  const json = readConfigJson(dir, "loadModel");
  return classOf(json, `${dir}/config.json`).fromPretrained(dir, opts);
}

/** A freshly initialized model of the class a config names. */
export function modelFromConfig(config: DiffusersConfig, opts: FromConfigOptions = {}): AnyDenoiserModel {
  return classOf(config, "model config").fromConfig(config, opts);
}

/** A model of the class a config names, with the given weights. */
export function modelFromParams(
  config: DiffusersConfig,
  params: Params,
  opts: ModelOptions = {},
): AnyDenoiserModel {
  return classOf(config, "model config").fromParams(config, params, opts);
}
