/**
 * transformers' CLIP text encoders on the diffuse engine: `CLIPTextModel` (the token states and the
 * pooled end-of-text state: SD 1.x/2.x's text_encoder, SDXL's first) and `CLIPTextModelWithProjection`
 * (the pooled state through `text_projection`: SDXL's text_encoder_2, SD3's first two encoders).
 *
 *   const te = await CLIPTextModel.fromPretrained("sd15/text_encoder");   // or the pipeline folder
 *   const { lastHiddenState, poolerOutput } = await te.forward(ids, { attentionMask });
 *
 * Folders are transformers': config.json (clip-text-config.ts) and model.safetensors (F32, F16 or BF16;
 * `model.<variant>.safetensors` with `variant`). The weights are float32 in memory, embedded as
 * constants in one traced graph per input shape (compiled on first use, cached, released by dispose).
 */
import type { SessionOptions } from "../../runtime/options.ts";
import type { CompiledGraph } from "../../runtime/session.ts";
import { type DataOf, formatShape, HostTensor } from "../../tensor/host.ts";
import { countParams, type ParamSpec, type Params } from "../../tensor/params.ts";
import { LoraAdapters } from "../lora/adapters.ts";
import { WeightGraphs } from "../weight-graphs.ts";
import {
  clipTextForward,
  clipTextParamSpecs,
  clipTextProjection,
  poolPositions,
  type TokenIds,
} from "./clip-text.ts";
import {
  type ClipTextArchitecture,
  type ClipTextConfig,
  clipTextConfigToJson,
  type TransformersConfig,
} from "./clip-text-config.ts";
import {
  type ClipTextDescription,
  type ClipTextFromConfigOptions,
  type ClipTextFromPretrainedOptions,
  type ClipTextModelOptions,
  type ClipTextParts,
  type ClipTextSaveOptions,
  describeClipText,
  initParts,
  paramParts,
  pretrainedParts,
  withProjection,
  writeClipText,
} from "./clip-text-files.ts";

export type {
  ClipTextDescription,
  ClipTextFromConfigOptions,
  ClipTextFromPretrainedOptions,
  ClipTextModelOptions,
  ClipTextSaveOptions,
} from "./clip-text-files.ts";

export interface ClipTextCallOptions {
  /** [N, L] of 1 (attend) and 0 (padding), as the tokenizer returns it: added to the causal mask. */
  readonly attentionMask?: readonly (readonly number[])[] | HostTensor;
  /** Also return every layer's states (transformers' `hidden_states`). */
  readonly outputHiddenStates?: boolean;
}

export interface CLIPTextModelOutput {
  /** [N, L, D] after the final LayerNorm. */
  readonly lastHiddenState: HostTensor<"float32">;
  /** [N, D]: the end-of-text token's state. */
  readonly poolerOutput: HostTensor<"float32">;
  /** numHiddenLayers + 1 of [N, L, D]: the embeddings, then each layer, before the final LayerNorm. */
  readonly hiddenStates?: HostTensor<"float32">[];
}

export interface CLIPTextModelWithProjectionOutput {
  /** [N, projection_dim]: the pooled state through text_projection. */
  readonly textEmbeds: HostTensor<"float32">;
  readonly lastHiddenState: HostTensor<"float32">;
  readonly hiddenStates?: HostTensor<"float32">[];
}

/** Token ids checked against the model: an int64 [N, L] tensor. */
function idsFeed(cls: string, ids: TokenIds, c: ClipTextConfig): HostTensor<"int64"> {
  let t: HostTensor<"int64">;
  if (ids instanceof HostTensor) {
    if (ids.dtype !== "int64" || ids.shape.length !== 2) {
      throw new Error(
        `${cls}.forward: input ids must be an int64 [N, L] tensor, got ${ids.dtype} ${formatShape(ids.shape)}`,
      );
    }
    t = ids;
  } else {
    const l = ids[0]?.length ?? 0;
    if (ids.length === 0 || ids.some((r) => r.length !== l)) {
      throw new Error(
        `${cls}.forward: input ids must be a non-empty list of rows of equal length (pad them)`,
      );
    }
    const flat = ids.flat();
    const bad = flat.find((v) => !Number.isInteger(v));
    if (bad !== undefined) throw new Error(`${cls}.forward: token id ${bad} is not an integer`);
    t = HostTensor.int64(flat, [ids.length, l]);
  }
  const l = t.shape[1]!;
  if (l < 1 || l > c.maxPositionEmbeddings) {
    throw new Error(
      `${cls}.forward: sequences of ${l} tokens do not fit max_position_embeddings ${c.maxPositionEmbeddings}; truncate them to at most ${c.maxPositionEmbeddings}`,
    );
  }
  const data = t.data as DataOf["int64"];
  for (let i = 0; i < data.length; i++) {
    const v = data[i]!;
    if (v < 0n || v >= BigInt(c.vocabSize)) {
      const [row, col] = [Math.floor(i / l), i % l];
      throw new Error(
        `${cls}.forward: token id ${v} at [${row}, ${col}] is outside the vocabulary 0..${c.vocabSize - 1} (vocab_size ${c.vocabSize})`,
      );
    }
  }
  return t;
}

/** An attention mask of 1s and 0s, as the graph's float32 [N, L] input. */
function maskFeed(
  cls: string,
  mask: NonNullable<ClipTextCallOptions["attentionMask"]>,
  n: number,
  l: number,
): HostTensor<"float32"> {
  let shape: readonly number[];
  let values: number[];
  if (mask instanceof HostTensor) {
    shape = mask.shape;
    values = mask.toArray();
  } else {
    const ragged = mask.some((r) => r.length !== l);
    shape = ragged ? [mask.length, -1] : [mask.length, l];
    values = mask.flat();
  }
  if (shape.length !== 2 || shape[0] !== n || shape[1] !== l) {
    const got = shape[1] === -1 ? "rows of unequal length" : formatShape(shape);
    throw new Error(`${cls}.forward: attentionMask must be [${n}, ${l}] like the ids, got ${got}`);
  }
  const bad = values.find((v) => v !== 0 && v !== 1);
  if (bad !== undefined) {
    throw new Error(`${cls}.forward: attentionMask holds ${bad}; use 1 (attend) and 0 (padding)`);
  }
  return new HostTensor(Float32Array.from(values), [n, l]);
}

/** What both classes share: config, weights, folders, graphs. */
abstract class ClipTextEncoder {
  private readonly graphs: WeightGraphs;
  /** LoRA adapters on this encoder's layers (`loadLoraWeights`, models/lora). */
  readonly lora: LoraAdapters;
  /** The component prefix of its keys in diffusers' LoRA files ("text_encoder"; "text_encoder_2" for a second encoder). */
  loraComponent = "text_encoder";
  /** The typed config (camelCase). */
  readonly typedConfig: ClipTextConfig;
  /** Weights by transformers' dotted names, in its state-dict order. Replace values (not their data) to swap weights. */
  readonly params: Params;
  /** config.json keys this implementation does not read, written back by savePretrained. */
  readonly extraConfig: Readonly<Record<string, unknown>>;
  protected readonly session: SessionOptions;
  protected abstract readonly className: ClipTextArchitecture;

  /** Prefer the static constructors (fromPretrained, fromConfig, fromParams), which check what they get. */
  constructor(parts: ClipTextParts) {
    this.typedConfig = parts.file.config;
    this.extraConfig = parts.file.extra;
    this.params = parts.params;
    this.session = parts.session;
    this.lora = new LoraAdapters(this.params, "CLIP text encoder");
    this.graphs = new WeightGraphs(this.params, this.session, this.lora);
  }

  get loraOwner(): string {
    return this.className;
  }

  /** The config as transformers writes it (architectures, model_type, every CLIPTextConfig key, sorted). */
  get config(): TransformersConfig {
    return clipTextConfigToJson(this.typedConfig, { architecture: this.className, extra: this.extraConfig });
  }

  /** The parameter specs (names, shapes, transformers' initialisers) of this config. */
  get specs(): ParamSpec[] {
    return clipTextParamSpecs(this.typedConfig, { projection: withProjection(this.className) });
  }

  get numParams(): number {
    return countParams(this.params);
  }

  /** Writes config.json and model.safetensors as transformers does (F32 by default, or F16/BF16). */
  async savePretrained(dir: string, opts: ClipTextSaveOptions = {}): Promise<void> {
    const file = {
      config: this.typedConfig,
      architecture: this.className,
      extra: this.extraConfig,
      fromFullClip: false,
    };
    writeClipText(dir, this.className, file, this.params, opts);
  }

  /** Releases the compiled graphs (they are compiled again on the next call). */
  dispose(): void {
    this.graphs.dispose();
  }

  /** Runs the graph: outputs last_hidden_state, pooled (or text_embeds) and hidden_states.<i>. */
  protected async encode(
    inputIds: TokenIds,
    opts: ClipTextCallOptions,
  ): Promise<{ last: HostTensor<"float32">; head: HostTensor<"float32">; hidden?: HostTensor<"float32">[] }> {
    const c = this.typedConfig;
    const ids = idsFeed(this.className, inputIds, c);
    const [n, l] = ids.shape as [number, number];
    const feeds: Record<string, HostTensor> = {
      input_ids: ids,
      pool_index: HostTensor.int64(poolPositions(ids, c)),
    };
    if (opts.attentionMask) feeds["attention_mask"] = maskFeed(this.className, opts.attentionMask, n, l);
    const hidden = opts.outputHiddenStates ?? false;
    const graph = await this.graphFor(n, l, opts.attentionMask !== undefined, hidden);
    const out = await graph.run(feeds);
    const f32 = (k: string) => out[k] as HostTensor<"float32">;
    return {
      last: f32("last_hidden_state"),
      head: f32("head"),
      ...(hidden
        ? { hidden: Array.from({ length: c.numHiddenLayers + 1 }, (_, i) => f32(`hidden_states.${i}`)) }
        : {}),
    };
  }

  private graphFor(n: number, l: number, masked: boolean, hidden: boolean): Promise<CompiledGraph> {
    const key = `${n}x${l}${masked ? " masked" : ""}${hidden ? " hidden" : ""}`;
    const c = this.typedConfig;
    const projection = withProjection(this.className);
    const inputs = {
      input_ids: { shape: [n, l], dtype: "int64" as const },
      pool_index: { shape: [n], dtype: "int64" as const },
      ...(masked ? { attention_mask: { shape: [n, l] } } : {}),
    };
    return this.graphs.get(key, inputs, (inp, scope) => {
      const r = clipTextForward(scope, c, inp["input_ids"]!, {
        poolIndex: inp["pool_index"]!,
        ...(masked ? { attentionMask: inp["attention_mask"]! } : {}),
      });
      const out: Record<string, (typeof r)["pooled"]> = {
        last_hidden_state: r.lastHiddenState,
        head: projection ? clipTextProjection(scope, c, r.pooled) : r.pooled,
      };
      if (hidden) for (const [i, h] of r.hiddenStates.entries()) out[`hidden_states.${i}`] = h;
      return out;
    });
  }
}

/** transformers' CLIPTextModel: token states and the pooled end-of-text state. */
export class CLIPTextModel extends ClipTextEncoder {
  protected readonly className = "CLIPTextModel";

  /** A text_encoder folder (config.json + model.safetensors, F32/F16/BF16) or a pipeline folder with text_encoder/. */
  static async fromPretrained(dir: string, opts: ClipTextFromPretrainedOptions = {}): Promise<CLIPTextModel> {
    return new CLIPTextModel(pretrainedParts("CLIPTextModel", dir, opts));
  }

  /** Fresh weights (transformers' initialisers) for a config.json object or typed fields. */
  static fromConfig(
    config: TransformersConfig | Partial<ClipTextConfig>,
    opts: ClipTextFromConfigOptions = {},
  ): CLIPTextModel {
    return new CLIPTextModel(initParts("CLIPTextModel", config, opts));
  }

  /** The class bound to a config, without weights (specs, and writing and reading its folders). */
  static describe(config: TransformersConfig | Partial<ClipTextConfig>): ClipTextDescription {
    return describeClipText("CLIPTextModel", config);
  }

  /** Given weights (transformers' names), checked against the config. */
  static fromParams(
    config: TransformersConfig | Partial<ClipTextConfig>,
    params: Params,
    opts: ClipTextModelOptions = {},
  ): CLIPTextModel {
    return new CLIPTextModel(paramParts("CLIPTextModel", config, params, opts));
  }

  /** ids [N, L] (L ≤ max_position_embeddings) → last_hidden_state, pooler_output (and hidden_states). */
  async forward(inputIds: TokenIds, opts: ClipTextCallOptions = {}): Promise<CLIPTextModelOutput> {
    const r = await this.encode(inputIds, opts);
    return { lastHiddenState: r.last, poolerOutput: r.head, ...(r.hidden ? { hiddenStates: r.hidden } : {}) };
  }
}

/** transformers' CLIPTextModelWithProjection: token states and the projected pooled state. */
export class CLIPTextModelWithProjection extends ClipTextEncoder {
  protected readonly className = "CLIPTextModelWithProjection";

  /** A text encoder folder (config.json + model.safetensors) or a pipeline folder (`subfolder: "text_encoder_2"` for SDXL's). */
  static async fromPretrained(
    dir: string,
    opts: ClipTextFromPretrainedOptions = {},
  ): Promise<CLIPTextModelWithProjection> {
    return new CLIPTextModelWithProjection(pretrainedParts("CLIPTextModelWithProjection", dir, opts));
  }

  static fromConfig(
    config: TransformersConfig | Partial<ClipTextConfig>,
    opts: ClipTextFromConfigOptions = {},
  ): CLIPTextModelWithProjection {
    return new CLIPTextModelWithProjection(initParts("CLIPTextModelWithProjection", config, opts));
  }

  static describe(config: TransformersConfig | Partial<ClipTextConfig>): ClipTextDescription {
    return describeClipText("CLIPTextModelWithProjection", config);
  }

  static fromParams(
    config: TransformersConfig | Partial<ClipTextConfig>,
    params: Params,
    opts: ClipTextModelOptions = {},
  ): CLIPTextModelWithProjection {
    return new CLIPTextModelWithProjection(paramParts("CLIPTextModelWithProjection", config, params, opts));
  }

  /** ids [N, L] → text_embeds [N, projection_dim], last_hidden_state (and hidden_states). */
  async forward(
    inputIds: TokenIds,
    opts: ClipTextCallOptions = {},
  ): Promise<CLIPTextModelWithProjectionOutput> {
    const r = await this.encode(inputIds, opts);
    return { textEmbeds: r.head, lastHiddenState: r.last, ...(r.hidden ? { hiddenStates: r.hidden } : {}) };
  }
}
