/** Layers composed from the engine's primitives. */
export { gelu, geluTanh, relu, silu } from "./activations.ts";
export {
  type AttentionOptions,
  mergeHeads,
  multiHeadAttention,
  scaledDotProductAttention,
  spatialSelfAttention,
  splitHeads,
} from "./attention.ts";
export {
  embedding,
  type TimestepEmbeddingOptions,
  timestepEmbedding,
  timestepFrequencies,
} from "./embedding.ts";
export { type Conv2dLayerOptions, conv2d, type LinearOptions, linear } from "./linear.ts";
export { crossEntropy, logSoftmax, mse, msePerSample, weightedMse } from "./losses.ts";
export { groupNorm, layerNorm, standardize } from "./norm.ts";
export { upsampleNearest } from "./resample.ts";
