/**
 * Validation of generation requests: every field checked for type and range, unknown fields and
 * unknown models or samplers refused, each error naming the field, the bad value and what is allowed
 * (answered as 400). A valid request becomes the worker's SampleSpec plus the parameters echoed
 * back to the page and written into the PNG.
 */
import { SCHEDULER_NAMES, schedulerFor } from "../pipelines/scheduler-names.ts";
import type { Catalog, ModelInfo } from "./catalog.ts";
import { HttpError } from "./http.ts";
import type { SampleSpec } from "./protocol.ts";

/** Limits on what one request may ask for (the studio is interactive: these keep a job to seconds or minutes). */
export const LIMITS = {
  steps: { min: 1, max: 200 },
  count: { min: 1, max: 64 },
  guidance: { min: 0, max: 20 },
  guidanceRescale: { min: 0, max: 1 },
  eta: { min: 0, max: 1 },
  seed: { min: 0, max: 2 ** 32 - 1 },
  size: { min: 8, max: 128 },
} as const;

/** The parameters of a generation, as the page sends them and the gallery keeps them. */
export interface GenerateParams {
  model: string;
  /** A class label, "all" (labels cycle through the classes), or null for an unconditional model. */
  label: number | "all" | null;
  scheduler: string;
  karras: boolean;
  steps: number;
  guidance: number;
  guidanceRescale: number;
  eta: number;
  seed: number;
  count: number;
  size: number;
}

const FIELDS = [
  "model",
  "label",
  "prompt",
  "scheduler",
  "karras",
  "steps",
  "guidance",
  "guidanceRescale",
  "eta",
  "seed",
  "count",
  "size",
];

const bad = (msg: string) => new HttpError(400, msg);

function number(
  body: Record<string, unknown>,
  key: keyof typeof LIMITS,
  fallback: number,
  integer: boolean,
): number {
  const v = body[key];
  if (v === undefined) return fallback;
  const { min, max } = LIMITS[key];
  const kind = integer ? "an integer" : "a number";
  if (
    typeof v !== "number" ||
    !Number.isFinite(v) ||
    (integer && !Number.isInteger(v)) ||
    v < min ||
    v > max
  ) {
    throw bad(`${key} must be ${kind} from ${min} to ${max}, got ${JSON.stringify(v)}`);
  }
  return v;
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
    if (!FIELDS.includes(k)) throw bad(`unknown field "${k}"; the fields are ${FIELDS.join(", ")}`);
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
      `unknown model "${b["model"]}"; this studio serves ${models.map((m) => `"${m.id}"`).join(", ") || "no models"} (start it with --model DIR to add one)`,
    );
  }
  if (b["prompt"] !== undefined) {
    throw bad(
      `model "${model.id}" is class-conditional: it takes a class label, not a prompt (text models are not supported yet)`,
    );
  }

  let label: GenerateParams["label"];
  const rawLabel = b["label"];
  if (model.numClasses === null) {
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

  const scheduler = b["scheduler"] ?? model.defaultScheduler;
  if (typeof scheduler !== "string") throw bad(`scheduler must be a name: ${SCHEDULER_NAMES.join(", ")}`);
  const karras = b["karras"] ?? false;
  if (typeof karras !== "boolean") throw bad(`karras must be true or false, got ${JSON.stringify(karras)}`);
  // the scheduler layer knows which names exist and which fit this model; its errors say so
  try {
    schedulerFor({ name: scheduler, karras }, { _class_name: model.schedulerClass });
  } catch (e) {
    throw bad((e as Error).message.replace(/--(scheduler|karras)\b/g, "$1"));
  }

  const steps = number(b, "steps", 20, true);
  const guidance = number(b, "guidance", model.numClasses === null ? 1 : 3, false);
  const guidanceRescale = number(b, "guidanceRescale", 0, false);
  const eta = number(b, "eta", 0, false);
  const seed = number(b, "seed", 0, true);
  const count = number(b, "count", model.numClasses ?? 16, true);
  const size = number(b, "size", model.sampleSize, true);
  if (size % model.sizeMultiple !== 0) {
    throw bad(`size must be a multiple of ${model.sizeMultiple} for model "${model.id}", got ${size}`);
  }

  const labels =
    label === null
      ? null
      : Array.from({ length: count }, (_, i) => (label === "all" ? i % model.numClasses! : label));
  const nrow = label === "all" ? Math.min(count, model.numClasses!) : Math.min(count, 8);
  const params: GenerateParams = {
    model: model.id,
    label,
    scheduler,
    karras,
    steps,
    guidance,
    guidanceRescale,
    eta,
    seed,
    count,
    size,
  };
  const parameters = [
    `model: ${model.id}`,
    `label: ${label ?? "none"}`,
    `scheduler: ${scheduler}${karras ? " (karras)" : ""}`,
    `steps: ${steps}`,
    `guidance: ${guidance}`,
    `guidance_rescale: ${guidanceRescale}`,
    `eta: ${eta}`,
    `seed: ${seed}`,
    `count: ${count}`,
    `size: ${size}`,
  ].join(", ");
  const spec: SampleSpec = {
    dir: model.dir,
    stamp: model.stamp,
    scheduler,
    karras,
    steps,
    guidance,
    guidanceRescale,
    eta,
    seed,
    labels,
    count,
    numClasses: model.numClasses,
    size,
    nrow,
    parameters,
  };
  return { params, spec, model };
}
