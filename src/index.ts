/** diffuse: diffusion models in TypeScript. Public API (re-exports only). */

export { type CannyOptions, canny } from "./data/edges.ts";
export {
  EMOJI_SIZE,
  type EmojiCatalog,
  type EmojiDataset,
  type EmojiOptions,
  type EmojiRecord,
  type EmojiSplit,
  emojiCatalog,
  emojiPrompts,
  emojiRecords,
  loadEmoji,
} from "./data/emoji.ts";
export {
  EMOJI_VENDORS,
  type EmojiCaptionParts,
  type EmojiVendor,
  emojiCaption,
  emojiIdentity,
  parseEmojiCaption,
  SKIN_TONES,
  type SkinTone,
} from "./data/emoji-caption.ts";
export { loadImageFolder } from "./data/image-folder.ts";
export { DataLoader } from "./data/loader.ts";
export { loadMnist } from "./data/mnist.ts";
export {
  batchOf,
  type Conditioning,
  classCondition,
  concatConditions,
  noCondition,
} from "./diffusion/conditioning.ts";
export {
  type ConditionalNetwork,
  classifierFreeGuidance,
  guidedNetwork,
  rescaleNoiseCfg,
} from "./diffusion/guidance.ts";
// diffusion core and samplers
export * as diffusion from "./diffusion/index.ts";
export { type EdgeF1Options, type EdgeScore, edgeF1 } from "./eval/edges.ts";
export { EmojiJudge } from "./eval/emoji-classify.ts";
export {
  type EmojiEvalResult,
  type EmojiScores,
  type EvalEmojiOptions,
  evalEmoji,
  evaluateEmoji,
  formatEmojiReport,
  type GenerateImages,
  type ImageRange,
} from "./eval/emoji-eval.ts";
export { judgeAccuracy, trainEmojiJudge } from "./eval/train-emoji-judge.ts";
export { encodeApng } from "./io/apng.ts";
export { makeGrid } from "./io/grid.ts";
export { encodePng, readPngText } from "./io/png.ts";
// files and data
export { readSafetensors, writeSafetensors } from "./io/safetensors.ts";
export {
  BOUNDS,
  DEFAULT_MODEL_LIMITS,
  limitsWith,
  type ModelLimits,
  modelLimits,
  setModelLimits,
} from "./models/config-fields.ts";
export {
  CONTROLNET_CLASS_NAME,
  CONTROLNET_SCOPE,
  type ControlNetCallOptions,
  type ControlNetConfig,
  type ControlNetInputs,
  ControlNetModel,
  type ControlNetOutput,
  type ControlNetResiduals,
  controlNetConfigFromUNet,
  controlNetForward,
  controlNetParamSpecs,
  type FromUnetOptions,
  inControlNetScope,
  unet2dConditionWithControlNet,
} from "./models/controlnet/index.ts";
export { type DiTConfig, DiTTransformer2DModel } from "./models/dit/index.ts";
export { type AnyDenoiserModel, loadModel, modelFromConfig, modelFromParams } from "./models/load.ts";
export {
  type Adapter,
  fuseLora,
  type LoadLoraOptions,
  LoraAdapters,
  type LoraDialect,
  type LoraLayer,
  type LoraLoadReport,
  type LoraModel,
  loadLoraWeights,
  loraLayerNames,
  parseLoraSpec,
  readLoraFile,
  saveLoraWeights,
  setLoraScale,
  unfuseLora,
  writeLoraFile,
} from "./models/lora/index.ts";
export {
  resolveSD3Config,
  SD3_DEF,
  SD3_TEXT_LENGTH,
  type SD3CallOptions,
  type SD3Config,
  SD3Transformer2DModel,
  sd3Config,
  sd3ConfigFromDiffusers,
  sd3ConfigToDiffusers,
  sd3PositionTable,
} from "./models/mmdit/index.ts";
export {
  type BoundDenoiser,
  type ConditioningSpec,
  type CondSizes,
  DENOISER_CLASS_NAMES,
  type DenoiserDef,
  resolveDenoiser,
} from "./models/registry.ts";
export {
  CLIP_BASE_VOCAB,
  type ClipBpeTrainOptions,
  clipVocabFromMerges,
  learnClipMerges,
  trainClipBpe,
} from "./models/text/bpe-train.ts";
export { cleanClipText } from "./models/text/clip-bpe.ts";
export {
  type ClipTextForwardOptions,
  type ClipTextOutputs,
  clipFinalLayerNorm,
  clipTextForward,
  clipTextParamSpecs,
  clipTextProjection,
  poolOneHot,
  poolPositions,
  type TokenIds,
} from "./models/text/clip-text.ts";
export {
  type ClipActivation,
  type ClipTextConfig,
  clipTextConfig,
  clipTextConfigToJson,
  parseClipTextConfig,
  resolveClipTextConfig,
} from "./models/text/clip-text-config.ts";
export {
  CLIPTextModel,
  type CLIPTextModelOutput,
  CLIPTextModelWithProjection,
  type CLIPTextModelWithProjectionOutput,
  type ClipTextCallOptions,
  type ClipTextFromConfigOptions,
  type ClipTextFromPretrainedOptions,
  type ClipTextSaveOptions,
} from "./models/text/clip-text-model.ts";
export {
  CLIPTokenizer,
  type ClipBatch,
  type ClipDecodeOptions,
  type ClipPadding,
  type ClipTokenizeOptions,
} from "./models/text/clip-tokenizer.ts";
export type {
  AddedTokenSpec,
  CLIPTokenizerLoadOptions,
  CLIPTokenizerSpec,
} from "./models/text/clip-tokenizer-files.ts";
// models and pipelines
export { type DiffusersConfig, type UNet2DConfig, UNet2DModel, unetForward } from "./models/unet/index.ts";
export {
  type UNet2DConditionConfig,
  UNet2DConditionModel,
  type UNetCondCallOptions,
} from "./models/unet-cond/index.ts";
export {
  AutoencoderKL,
  type AutoencoderKLConfig,
  DiagonalGaussian,
  type LatentDistribution,
  sampleLatent,
  vaeDecode,
  vaeEncode,
  vaeParamSpecs,
  vaeScaleFactor,
} from "./models/vae/index.ts";
export * as nn from "./nn/index.ts";
export { loraTargets, TEXT_LORA_TARGETS, UNET_LORA_TARGETS, uniformLoraPlan } from "./nn/lora.ts";
export { emitOnnx } from "./onnx/emit.ts";
export { type GenerateOptions, generate } from "./pipelines/generate.ts";
export {
  checkSamplingOption,
  checkSamplingOptions,
  parametersText,
  SAMPLING_OPTIONS,
  type SamplingOptions,
  samplingDefaults,
} from "./pipelines/options.ts";
export {
  disposePipeline,
  type LoadedPipeline,
  loadPipeline,
  savePipeline,
  saveTextToImagePipeline,
  type TextToImageParts,
} from "./pipelines/pipeline-dir.ts";
export { imageSize, type PipelineRequest, pipelineGenerate, takesPrompts } from "./pipelines/run.ts";
export { SCHEDULER_NAMES, schedulerFor } from "./pipelines/scheduler-names.ts";
export {
  assembleSd3Text,
  SD3_T5_LENGTH,
  type Sd3ClipStates,
  type Sd3TextInputs,
  sd3ClipStates,
} from "./pipelines/sd3-text.ts";
export {
  checkPrompts,
  encodePrompts,
  latentDecoder,
  PromptError,
  promptConditions,
  type TextEncoding,
  tokenizePrompts,
} from "./pipelines/text-to-image.ts";
export { compile, compileGraph, evaluate, type InputSpec, trace } from "./runtime/compile.ts";
export type { SessionOptions } from "./runtime/options.ts";
export { CompiledGraph } from "./runtime/session.ts";
export { runInWorker, type WorkerContext } from "./runtime/worker.ts";
export * as samplers from "./samplers/index.ts";
export { type SampleOptions, Scheduler } from "./samplers/scheduler.ts";
// the engine: symbolic tensors, autodiff, parameters, compilation
export { grad, valueAndGrad } from "./tensor/autodiff.ts";
// host tensors, randomness
export { type DType, HostTensor, sizeOf } from "./tensor/host.ts";
export * as ops from "./tensor/ops.ts";
export { countParams, init, initParams, ParamScope, type ParamSpec, type Params } from "./tensor/params.ts";
export { ShapeError } from "./tensor/primitives.ts";
export { Rng } from "./tensor/rng.ts";
export { Graph, Tensor } from "./tensor/symbolic.ts";
export { resolveConfig, type TrainConfig } from "./train/config.ts";
// few-step students: consistency distillation (LCM) and rectified-flow reflow
export {
  DISTILL_DEFAULTS,
  DISTILL_LORA_DEFAULTS,
  type DistillConfig,
  DistillConfigError,
  type DistillLora,
  type DistillMethod,
  resolveDistillConfig,
} from "./train/distill-config.ts";
export { type DistillArgs, type DistillEvent, distillRun } from "./train/distill-trainer.ts";
export {
  type ConsistencyDistance,
  LCM_DEFAULTS,
  type LcmSettings,
  lcmPlan,
  solverTimesteps,
} from "./train/lcm.ts";
export {
  fusedWeights,
  LCM_LORA_TARGETS,
  lcmLoraFeeds,
  lcmLoraLoss,
  lcmLoraTargets,
  TEACHER_PREFIX,
} from "./train/lcm-lora.ts";
export { consistencyDistance, lcmLoss, targetFeeds } from "./train/lcm-loss.ts";
export {
  type CaptionEmbeddings,
  captionConditions,
  captionEmbeddings,
  lcmTextMethod,
} from "./train/lcm-text.ts";
export { LORA_WEIGHTS_NAME } from "./train/lora-component.ts";
// training
export { type AdamWConfig, adamwUpdate, clipByGlobalNorm, emaUpdate, globalNorm } from "./train/optim.ts";
export {
  drawReflowBatch,
  pairNoise,
  REFLOW_DEFAULTS,
  type ReflowPairs,
  type ReflowSettings,
  reflowSchedulerConfig,
  teacherPairs,
} from "./train/reflow.ts";
export { loadOrMakePairs, PAIR_CHUNK, type PairsManifest } from "./train/reflow-pairs.ts";
export {
  compileTrainStep,
  type LossFn,
  paramSpecsOf,
  type TrainState,
  TrainStep,
} from "./train/train-step.ts";
export { isVaeRunConfig, resolveVaeTrainConfig, type VaeTrainConfig } from "./train/vae-config.ts";
export {
  trainVae,
  type VaeTrainEvent,
  type VaeTrainOptions,
  type VaeTrainResult,
} from "./train/vae-trainer.ts";
