/**
 * Validation of generation requests: every field checked for type and range, unknown fields and
 * unknown models or samplers refused, each error naming the field, the bad value and what is allowed
 * (answered as 400). The sampling options go through the one schema (pipelines/options.ts: the
 * CLI's ranges and messages, word for word) and start from the model's recommended settings; count
 * and size through the studio's resource limits. A text-to-image model takes a prompt (and an
 * optional negative prompt) instead of a class label: checked as the CLI checks them (text, not
 * blank) and tokenized here, so a prompt longer than the text encoder's context is refused with its
 * length before any job is queued. A model with a ControlNet takes a control image (a PNG or JPEG
 * data URL, drawn or uploaded on the page), its scale and guess mode, optionally with Canny run on it
 * here; the control image the worker will use comes back to the page as a PNG among the parameters.
 * A text-to-image model takes the LoRA files the studio offers for it, by id, each at a scale.
 * A valid request becomes the worker's SampleSpec plus the parameters echoed back to the page and
 * written into the PNG.
 */
import { statSync } from "node:fs";
import { canny } from "../data/edges.ts";
import { makeGrid } from "../io/grid.ts";
import { decodeImage } from "../io/image-decode.ts";
import { encodePng } from "../io/png.ts";
import {
  checkNumber,
  checkSamplingOptions,
  parametersText,
  SAMPLING_OPTIONS,
  type SamplingField,
  type SamplingOptions,
  STUDIO_LIMITS,
} from "../pipelines/options.ts";
import { controlFromRaster } from "../pipelines/run.ts";
import { schedulerFor } from "../pipelines/scheduler-names.ts";
import { checkPrompts, tokenizePrompts } from "../pipelines/text-to-image.ts";
import type { Catalog, ModelInfo } from "./catalog.ts";
import { HttpError } from "./http.ts";
import type { SampleSpec } from "./protocol.ts";

/**
 * The ranges the page may offer (GET /api/info): the sampling options' own ranges, as the CLI has
 * them, and the studio's resource limits on count and size.
 */
export const LIMITS = {
  steps: { min: SAMPLING_OPTIONS.steps.min, max: SAMPLING_OPTIONS.steps.max },
  guidance: { min: SAMPLING_OPTIONS.guidance.min, max: SAMPLING_OPTIONS.guidance.max },
  guidanceRescale: { min: SAMPLING_OPTIONS.guidanceRescale.min, max: SAMPLING_OPTIONS.guidanceRescale.max },
  eta: { min: SAMPLING_OPTIONS.eta.min, max: SAMPLING_OPTIONS.eta.max },
  seed: { min: SAMPLING_OPTIONS.seed.min, max: SAMPLING_OPTIONS.seed.max },
  count: { min: STUDIO_LIMITS.count.min, max: STUDIO_LIMITS.count.max },
  size: { min: STUDIO_LIMITS.size.min, max: STUDIO_LIMITS.size.max },
} as const;

/** The parameters of a generation, as the page sends them and the gallery keeps them. */
export interface GenerateParams extends SamplingOptions {
  model: string;
  /** A class label, "all" (labels cycle through the classes), or null for an unconditional or text-to-image model. */
  label: number | "all" | null;
  /** The prompt of every image (text-to-image models), else null. */
  prompt: string | null;
  /** What guidance steers away from ("" = the empty prompt, as unguided), or null for a label model. */
  negativePrompt: string | null;
  count: number;
  size: number;
  /** The control image's settings and the image the ControlNet reads (a PNG data URL), for a model with one. */
  control?: ControlParams;
  /** LoRA files by id, each with its scale. */
  loras?: { id: string; scale: number }[];
}

/** How a generation was steered by a ControlNet. */
export interface ControlParams {
  scale: number;
  guessMode: boolean;
  /** "canny": the edges were found here in the given image; "none": the image was the control image. */
  detect: "none" | "canny";
  /** The control image at the generated size, as the ControlNet reads it (PNG data URL). */
  image: string;
}

/** The most pixels a control image may have before it is resized (the page sends it at the image size). */
const CONTROL_MAX_PIXELS = 4096 * 4096;
const CONTROL_FIELDS = ["image", "scale", "guessMode", "detect"];

const FIELDS = [
  "model",
  "label",
  "prompt",
  "negativePrompt",
  "scheduler",
  "karras",
  "steps",
  "guidance",
  "guidanceRescale",
  "eta",
  "seed",
  "count",
  "size",
  "control",
  "loras",
];

/** At most this many LoRA files at once, each at a scale within ±LORA_SCALE. */
const MAX_LORAS = 8;
const LORA_SCALE = 10;

const bad = (msg: string) => new HttpError(400, msg);

/** Runs a check of the options schema, the scheduler layer's or the prompts'; its message is the 400's, word for word. */
function checked<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    throw bad((e as Error).message);
  }
}

/** The prompt and negative prompt of a request to a text-to-image model, checked and tokenized. */
async function promptsOf(
  b: Record<string, unknown>,
  model: ModelInfo,
  catalog: Catalog,
): Promise<{ prompt: string; negativePrompt: string }> {
  if (b["label"] !== undefined) {
    throw bad(
      `model "${model.id}" is text-to-image: it takes a prompt, not a class label (got label ${JSON.stringify(b["label"])})`,
    );
  }
  if (b["prompt"] === undefined) {
    const e = model.promptExample;
    throw bad(
      `model "${model.id}" is text-to-image: give a prompt${e ? `, e.g. {"prompt": ${JSON.stringify(e)}}` : ""}`,
    );
  }
  // one prompt for every image: a list is refused as "prompt must be text, got a list"
  const prompt = checked(() => checkPrompts([b["prompt"]], "prompt"))[0]!;
  const rawNegative = b["negativePrompt"] ?? "";
  if (typeof rawNegative !== "string") {
    throw bad(
      `negativePrompt must be text (or "" for none), got ${Array.isArray(rawNegative) ? "a list" : typeof rawNegative}`,
    );
  }
  // a model whose files changed since it was listed has no tokenizer here: the worker checks then
  const tokenizer = await catalog.tokenizer(model);
  if (tokenizer) {
    checked(() => tokenizePrompts(tokenizer, [prompt], "prompt"));
    checked(() => tokenizePrompts(tokenizer, [rawNegative], "negative prompt"));
  }
  return { prompt, negativePrompt: rawNegative };
}

/**
 * The control image of a request to a model with a ControlNet: a PNG or JPEG data URL decoded,
 * centre-cropped and resized to the image size, edges found by Canny when asked (with the settings the
 * ControlNet was trained with); the scale from 0 to 10 (default 1) and guess mode (default off).
 */
function controlOf(
  raw: unknown,
  model: ModelInfo,
  size: number,
): { spec: NonNullable<SampleSpec["control"]>; params: ControlParams } {
  if (!model.control)
    throw bad(`model "${model.id}" has no ControlNet: it takes no control image (drop "control")`);
  if (typeof raw !== "object" || raw === null || Array.isArray(raw))
    throw bad('control must be an object such as {"image": "data:image/png;base64,…", "scale": 1}');
  const c = raw as Record<string, unknown>;
  for (const k of Object.keys(c))
    if (!CONTROL_FIELDS.includes(k))
      throw bad(
        `unknown field ${JSON.stringify(`control.${k}`)}; its fields are ${CONTROL_FIELDS.join(", ")}`,
      );
  const url = c["image"];
  const m = typeof url === "string" ? /^data:image\/(png|jpeg);base64,([A-Za-z0-9+/=\s]+)$/.exec(url) : null;
  if (!m) throw bad("control.image must be a PNG or JPEG image as a data URL (data:image/png;base64,…)");
  const raster = checked(() =>
    decodeImage(new Uint8Array(Buffer.from(m[2]!, "base64")), "control.image", {
      maxPixels: CONTROL_MAX_PIXELS,
    }),
  );
  const scale = c["scale"] ?? 1;
  if (typeof scale !== "number" || !Number.isFinite(scale) || scale < 0 || scale > 10)
    throw bad(`control.scale must be a number from 0 to 10, got ${JSON.stringify(scale)}`);
  const guessMode = c["guessMode"] ?? false;
  if (typeof guessMode !== "boolean")
    throw bad(`control.guessMode must be true or false, got ${JSON.stringify(guessMode)}`);
  const detect = c["detect"] ?? "none";
  if (detect !== "none" && detect !== "canny")
    throw bad(
      `control.detect must be "none" (the image is the control image) or "canny" (find its edges), got ${JSON.stringify(detect)}`,
    );
  let image = controlFromRaster(raster, size); // [1, 3, size, size]
  if (detect === "canny") image = canny(image, { ...model.control.canny, channels: 3 });
  const png = encodePng(makeGrid(image, { padding: 0 }));
  return {
    spec: { image: image.data as Float32Array, scale, guessMode },
    params: {
      scale,
      guessMode,
      detect,
      image: `data:image/png;base64,${Buffer.from(png).toString("base64")}`,
    },
  };
}

/** The LoRA files of a request: ids the studio offers for the model (no repeats), each with a scale (default 1). */
function lorasOf(
  raw: unknown,
  model: ModelInfo,
  catalog: Catalog,
): { id: string; path: string; scale: number }[] {
  if (!Array.isArray(raw) || raw.length > MAX_LORAS)
    throw bad(`loras must be a list of at most ${MAX_LORAS} {"id": …, "scale": …} objects`);
  const offered = catalog.loras();
  const seen = new Set<string>();
  return raw.map((l, i) => {
    if (typeof l !== "object" || l === null || Array.isArray(l))
      throw bad(`loras[${i}] must be an object such as {"id": "${model.loras[0] ?? "style"}", "scale": 0.8}`);
    const { id, scale = 1, ...rest } = l as Record<string, unknown>;
    const extra = Object.keys(rest)[0];
    if (extra !== undefined) throw bad(`unknown field "loras[${i}].${extra}"; its fields are id, scale`);
    const file = offered.find((f) => f.id === id);
    if (typeof id !== "string" || !model.loras.includes(id) || !file)
      throw bad(
        `loras[${i}].id ${JSON.stringify(id)} is not a LoRA file offered for model "${model.id}"${model.loras.length ? ` (offered: ${model.loras.join(", ")})` : " (none is: start the studio with --lora FILE, or train one with diffuse finetune)"}`,
      );
    if (seen.has(id)) throw bad(`loras: "${id}" is given twice; give each file once`);
    seen.add(id);
    if (typeof scale !== "number" || !Number.isFinite(scale) || Math.abs(scale) > LORA_SCALE)
      throw bad(
        `loras[${i}].scale must be a number from -${LORA_SCALE} to ${LORA_SCALE}, got ${JSON.stringify(scale)}`,
      );
    return { id, path: file.path, scale };
  });
}

/** Checks a request body against the catalog; throws HttpError(400) naming the first problem. */
export async function validateGenerate(
  body: unknown,
  catalog: Catalog,
): Promise<{ params: GenerateParams; spec: SampleSpec; model: ModelInfo }> {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw bad('the request body must be a JSON object such as {"model": "mnist", "steps": 20}');
  }
  const b = body as Record<string, unknown>;
  for (const k of Object.keys(b)) {
    // names and values from the request are quoted as JSON: a newline in one cannot split the message
    if (!FIELDS.includes(k))
      throw bad(`unknown field ${JSON.stringify(k)}; the fields are ${FIELDS.join(", ")}`);
  }
  const models = await catalog.models();
  if (typeof b["model"] !== "string") {
    throw bad(
      `model must be the id of a served model (${models.map((m) => m.id).join(", ") || "none served"})`,
    );
  }
  const model = models.find((m) => m.id === b["model"]);
  if (!model) {
    throw bad(
      `unknown model ${JSON.stringify(b["model"])}; this studio serves ${models.map((m) => `"${m.id}"`).join(", ") || "no models"} (start it with --model DIR to add one)`,
    );
  }
  const text = model.prompts ? await promptsOf(b, model, catalog) : null;
  if (!text) {
    for (const [k, what] of [
      ["prompt", "prompt"],
      ["negativePrompt", "negative prompt"],
    ] as const) {
      if (b[k] === undefined) continue;
      throw bad(
        model.numClasses === null
          ? `model "${model.id}" is unconditional: it takes no ${what}`
          : `model "${model.id}" is class-conditional: it takes a class label, not a ${what}`,
      );
    }
  }

  let label: GenerateParams["label"];
  const rawLabel = b["label"];
  if (text) label = null;
  else if (model.numClasses === null) {
    if (rawLabel !== undefined && rawLabel !== null && rawLabel !== "all") {
      throw bad(
        `model "${model.id}" is unconditional: it takes no class label, got ${JSON.stringify(rawLabel)}`,
      );
    }
    label = null;
  } else if (rawLabel === undefined || rawLabel === "all") label = "all";
  else if (
    typeof rawLabel === "number" &&
    Number.isInteger(rawLabel) &&
    rawLabel >= 0 &&
    rawLabel < model.numClasses
  ) {
    label = rawLabel;
  } else {
    throw bad(
      `label must be a class of model "${model.id}" (an integer from 0 to ${model.numClasses - 1}) or "all", got ${JSON.stringify(rawLabel)}`,
    );
  }

  // the same checks, ranges and messages as the CLI's; the model's recommendations fill in the rest
  const given: Partial<Record<SamplingField, unknown>> = {};
  for (const field of Object.keys(SAMPLING_OPTIONS) as SamplingField[]) given[field] = b[field];
  const opts: SamplingOptions = { ...model.defaults, ...checked(() => checkSamplingOptions(given)) };
  // the scheduler layer knows which names exist and which fit this model; its errors say so
  checked(() =>
    schedulerFor({ name: opts.scheduler, karras: opts.karras }, { _class_name: model.schedulerClass }),
  );
  const count = checked(() =>
    checkNumber("count", STUDIO_LIMITS.count, b["count"] ?? model.numClasses ?? (text ? 4 : 16)),
  );
  const size = checked(() => checkNumber("size", STUDIO_LIMITS.size, b["size"] ?? model.sampleSize));
  if (size % model.sizeMultiple !== 0) {
    throw bad(`size must be a multiple of ${model.sizeMultiple} for model "${model.id}", got ${size}`);
  }

  const control = b["control"] === undefined ? null : controlOf(b["control"], model, size);
  const loras = b["loras"] === undefined ? [] : lorasOf(b["loras"], model, catalog);

  const labels =
    label === null
      ? null
      : Array.from({ length: count }, (_, i) => (label === "all" ? i % model.numClasses! : label));
  const nrow = label === "all" ? Math.min(count, model.numClasses!) : Math.min(count, 8);
  const params: GenerateParams = {
    model: model.id,
    label,
    prompt: text?.prompt ?? null,
    negativePrompt: text?.negativePrompt ?? null,
    ...opts,
    count,
    size,
    ...(control ? { control: control.params } : {}),
    ...(loras.length ? { loras: loras.map(({ id, scale }) => ({ id, scale })) } : {}),
  };
  // as diffuse sample writes it: the prompt (and a negative prompt, if any) among the extras
  const parameters = parametersText(opts, {
    model: model.id,
    ...(text ? {} : { labels: label }),
    extra: {
      ...(text ? { prompt: text.prompt } : {}),
      ...(text?.negativePrompt ? { negative_prompt: text.negativePrompt } : {}),
      ...(control
        ? {
            control: `${control.params.detect === "canny" ? "canny edges of an image" : "an image"}:${control.params.scale}${control.params.guessMode ? " (guess mode)" : ""}`,
          }
        : {}),
      ...(loras.length ? { lora: loras.map((l) => `${l.id}:${l.scale}`).join(", ") } : {}),
      count,
      size,
    },
  });
  const spec: SampleSpec = {
    dir: model.dir,
    stamp: model.stamp,
    ...opts,
    labels,
    prompts: text ? Array.from({ length: count }, () => text.prompt) : null,
    negativePrompt: text?.negativePrompt || null,
    count,
    numClasses: model.numClasses,
    size,
    nrow,
    parameters,
    control: control?.spec ?? null,
    loras: loras.map((l) => {
      // a finetune run re-exports its file: a new stamp loads it again
      const st = checked(() => statSync(l.path));
      return { name: l.id, path: l.path, scale: l.scale, stamp: `${st.mtimeMs}-${st.size}` };
    }),
  };
  return { params, spec, model };
}
