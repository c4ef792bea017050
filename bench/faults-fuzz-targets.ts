/**
 * The fuzzer's targets and the loop that runs them in a worker thread (faults-fuzz.ts drives it and
 * watches the time). Each target turns input i (seeded) into one call of a reader or validator that
 * takes outside data: the safetensors reader, model and pipeline config parsing, training configs with
 * --set, scheduler configs, the studio's request validation and budget. An input is accepted, or
 * rejected with an Error whose message is one line; anything else is a crash: an engine error
 * (TypeError, RangeError…), a raw message ("Cannot read properties", "Invalid array length"), a
 * message of several lines, a studio answer that is not 4xx, or Object.prototype polluted.
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { encodePng } from "../src/io/png.ts";
import { parseSafetensors, readSafetensors, serializeSafetensors } from "../src/io/safetensors.ts";
import { resolveDenoiser } from "../src/models/registry.ts";
import { clipTextParamSpecs } from "../src/models/text/clip-text.ts";
import { parseClipTextConfig } from "../src/models/text/clip-text-config.ts";
import { resolveVaeConfig } from "../src/models/vae/config.ts";
import { vaeParamSpecs } from "../src/models/vae/vae.ts";
import { disposePipeline, loadPipeline } from "../src/pipelines/pipeline-dir.ts";
import type { WorkerContext } from "../src/runtime/worker.ts";
import { Scheduler } from "../src/samplers/scheduler.ts";
import { HostTensor } from "../src/tensor/host.ts";
import { Rng } from "../src/tensor/rng.ts";
import { resolveConfig } from "../src/train/config.ts";
import { setField, settableFields } from "../src/train/config-file.ts";
import { isVaeRunConfig, resolveVaeTrainConfig, vaeSettableFields } from "../src/train/vae-config.ts";
import { Catalog } from "../src/web/catalog.ts";
import { HttpError } from "../src/web/http.ts";
import { admitJob } from "../src/web/job-budget.ts";
import { validateGenerate } from "../src/web/validate.ts";
import { makeTinyControlNetSd, makeTinyLora } from "../test/support/tiny-controlnet.ts";
import { makeTinySd } from "../test/support/tiny-sd.ts";
import { makeFixture } from "../test/web/fixture.ts";
import { choose, clone, type Json, mutate, pick, randomValue, setOwn } from "./faults-fuzz-gen.ts";

export const TARGETS = [
  "safetensors",
  "model-config",
  "train-config",
  "scheduler",
  "studio-request",
] as const;
export type TargetName = (typeof TARGETS)[number];

export type Outcome = "accepted" | "rejected" | "crash";

export interface InputResult {
  i: number;
  outcome: Outcome;
  ms: number;
  /** RSS growth during the input (MB). */
  mb: number;
  /** The crash's message (first 200 characters). */
  message?: string;
}

interface Target {
  run(rng: Rng, i: number): Promise<void> | void;
  /** Whether a rejection is a proper one (default: any Error that passes the message checks). */
  proper?(e: Error): boolean;
  dispose?(): void;
}

const ROOT = new URL("../", import.meta.url);
const readJson = (rel: string): Json => JSON.parse(readFileSync(new URL(rel, ROOT), "utf8")) as Json;

function safetensorsTarget(): Target {
  const seed = serializeSafetensors(
    {
      w: new HostTensor(
        Float32Array.from({ length: 12 }, (_, k) => k / 3),
        [3, 4],
      ),
      h: { dtype: "F16", shape: [5], bytes: new Uint8Array(10) },
      b: { dtype: "BF16", shape: [2, 2], bytes: new Uint8Array(8) },
      i: new HostTensor(BigInt64Array.of(1n, 2n, 3n), [3]),
    },
    { metadata: { format: "pt" } },
  );
  const n = Number(new DataView(seed.buffer, seed.byteOffset).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(seed.subarray(8, 8 + n))) as Json;
  const dir = mkdtempSync(join(tmpdir(), "diffuse-fuzz-st-"));
  return {
    run(rng, i) {
      let bytes: Uint8Array;
      const op = pick(rng, 5);
      if (op === 0) {
        bytes = seed.slice();
        for (let k = 1 + pick(rng, 8); k > 0; k--) bytes[pick(rng, bytes.length)]! ^= 1 << pick(rng, 8);
      } else if (op === 1) bytes = seed.slice(0, pick(rng, seed.length));
      else if (op === 2) {
        bytes = new Uint8Array(seed.length + pick(rng, 64));
        bytes.set(seed);
      } else {
        const text = new TextEncoder().encode(JSON.stringify(mutate(rng, header)));
        const data = seed.subarray(8 + n);
        bytes = new Uint8Array(8 + text.length + data.length);
        const view = new DataView(bytes.buffer);
        const lie =
          op === 4 ? choose(rng, [0n, 1n, 7n, 2n ** 40n, 2n ** 63n, BigInt(text.length + 1)]) : null;
        view.setBigUint64(0, lie ?? BigInt(text.length), true);
        bytes.set(text, 8);
        bytes.set(data, 8 + text.length);
      }
      if (i % 20 === 0) {
        const path = join(dir, "x.safetensors");
        writeFileSync(path, bytes);
        readSafetensors(path);
      } else parseSafetensors(bytes);
    },
    dispose: () => rmSync(dir, { recursive: true, force: true }),
  };
}

async function modelConfigTarget(): Promise<Target> {
  const denoisers = [
    "test/fixtures/unet2d-a/model/config.json",
    "test/fixtures/unet2d-cond/model/config.json",
    "test/fixtures/dit/model/config.json",
    "test/fixtures/sd3-mmdit/model/config.json",
    "test/fixtures/sd3-mmdit-sd35/model/config.json",
    "test/fixtures/controlnet/model/config.json",
    "test/fixtures/unet-configs/unet-mnist.json",
    "assets/models/mnist/unet/config.json",
  ].map(readJson);
  const vae = readJson("test/fixtures/vae-kl/model/config.json");
  const clip = readJson("test/fixtures/clip-text-a/model/config.json");
  const fx = await makeFixture();
  const pipeDir = join(fx.root, "pipe");
  const files = ["model_index.json", "unet/config.json", "scheduler/scheduler_config.json", "diffuse.json"];
  const originals = files.map((f) => JSON.parse(readFileSync(join(fx.modelDir, f), "utf8")) as Json);
  return {
    async run(rng, i) {
      if (i % 20 === 0) {
        // a whole pipeline folder, one of its JSON files mutated
        rmSync(pipeDir, { recursive: true, force: true });
        for (const sub of ["unet", "scheduler"]) mkdirSync(join(pipeDir, sub), { recursive: true });
        for (const name of readdirSync(join(fx.modelDir, "unet")))
          writeFileSync(join(pipeDir, "unet", name), readFileSync(join(fx.modelDir, "unet", name)));
        const k = pick(rng, files.length);
        for (const [j, f] of files.entries()) {
          writeFileSync(
            join(pipeDir, f),
            JSON.stringify(j === k ? mutate(rng, originals[j]!) : originals[j]),
          );
        }
        disposePipeline(await loadPipeline(pipeDir));
        return;
      }
      // the parsers take a config object (the file readers refuse a file that holds anything else;
      // the pipeline folders above cover those)
      const object = (seed: Json): Record<string, unknown> => {
        for (;;) {
          const m = mutate(rng, seed);
          if (m && typeof m === "object" && !Array.isArray(m)) return m;
        }
      };
      const kind = pick(rng, 10);
      if (kind === 0) vaeParamSpecs(resolveVaeConfig(object(vae)));
      else if (kind === 1) clipTextParamSpecs(parseClipTextConfig(object(clip), "CLIPTextModel").config);
      else resolveDenoiser(object(choose(rng, denoisers))).paramSpecs();
    },
    dispose: () => rmSync(fx.root, { recursive: true, force: true }),
  };
}

function trainConfigTarget(): Target {
  const dir = new URL("configs/", ROOT);
  const seeds = readdirSync(dir)
    .filter((f) => f.endsWith(".json"))
    .map((f) => readJson(`configs/${f}`));
  const words = [
    "__proto__",
    "constructor",
    "prototype",
    "toString",
    "x",
    "",
    "steps",
    "lr",
    "model",
    "training",
  ];
  return {
    run(rng) {
      const m = rng.nextUniform() < 0.3 ? clone(choose(rng, seeds)) : mutate(rng, choose(rng, seeds));
      let raw: Record<string, unknown> = m && typeof m === "object" && !Array.isArray(m) ? m : { model: m };
      const vae = isVaeRunConfig(raw);
      const settable = vae ? vaeSettableFields() : settableFields(raw);
      const known = Object.entries(settable).flatMap(([s, fs]) => (fs ?? ["x"]).map((f) => `${s}.${f}`));
      for (let k = pick(rng, 4); k > 0; k--) {
        const key =
          rng.nextUniform() < 0.6
            ? choose(rng, known)
            : Array.from({ length: 1 + pick(rng, 3) }, () => choose(rng, [...words, ...known])).join(".");
        const v = randomValue(rng);
        raw = setField(
          raw,
          key,
          typeof v === "string" && rng.nextUniform() < 0.5 ? v : JSON.stringify(v),
          settable,
        );
      }
      if (vae) resolveVaeTrainConfig(raw);
      else resolveConfig(raw);
    },
  };
}

function schedulerTarget(): Target {
  const entries = (readJson("test/fixtures/diffusers-schedulers/timesteps.json") as { entries: Json[] })
    .entries;
  const seeds: Json[] = entries.map((e) => {
    const { scheduler_class, config_full } = e as {
      scheduler_class: string;
      config_full: { [k: string]: Json };
    };
    return { ...config_full, _class_name: scheduler_class };
  });
  for (const m of ["mnist", "emoji", "mnist-dit"])
    seeds.push(readJson(`assets/models/${m}/scheduler/scheduler_config.json`));
  return {
    run(rng) {
      const s = Scheduler.fromConfig(mutate(rng, choose(rng, seeds)));
      const steps = choose(rng, [1, 2, 4, 10, 25, 50, 1000, 0, -1, 1.5, 1e6, 1e9, Number.NaN]);
      s.timesteps(steps);
      s.sigmas(steps);
    },
  };
}

/** A small PNG (a white square outline on black), the kind of control image the page sends. */
function controlPng(): Uint8Array {
  const side = 16;
  const data = new Uint8Array(side * side * 3);
  for (let y = 3; y < 13; y++)
    for (let x = 3; x < 13; x++)
      if (y === 3 || y === 12 || x === 3 || x === 12)
        data.fill(255, (y * side + x) * 3, (y * side + x + 1) * 3);
  return encodePng({ width: side, height: side, channels: 3, data });
}

async function studioTarget(): Promise<Target> {
  const fx = await makeFixture();
  const sd = await makeTinySd();
  const cn = await makeTinyControlNetSd(sd);
  const lora = join(dirname(sd), "style.safetensors");
  await makeTinyLora(sd, lora);
  const catalog = new Catalog({ models: [fx.modelDir, sd, cn], loras: [lora] });
  const models = await catalog.models();
  const text = models.find((m) => m.dir === sd)!;
  const png = controlPng();
  const url = (bytes: Uint8Array, type = "png") =>
    `data:image/${type};base64,${Buffer.from(bytes).toString("base64")}`;
  const seeds: Json[] = [
    { model: "tiny", label: 1, steps: 10, guidance: 3, seed: 1, count: 4, size: 8, scheduler: "ddim" },
    { model: "tiny", label: "all", scheduler: "dpm++2m", karras: true, eta: 0.5, guidanceRescale: 0.7 },
    { model: text.id, prompt: "a red circle", negativePrompt: "blue", steps: 4, count: 2, size: 16 },
    { model: text.id, prompt: "a blue square", loras: [{ id: text.loras[0] ?? "style", scale: 0.8 }] },
    {
      model: models.find((m) => m.dir === cn)!.id,
      prompt: "a red circle",
      control: { image: url(png), scale: 1, guessMode: false, canny: true },
    },
  ];
  const budget = { memoryBytes: 2 ** 30, seconds: 900 };
  return {
    async run(rng) {
      const body = rng.nextUniform() < 0.1 ? randomValue(rng) : mutate(rng, choose(rng, seeds));
      const control = body && typeof body === "object" && !Array.isArray(body) ? body["control"] : undefined;
      if (control && typeof control === "object" && !Array.isArray(control) && rng.nextUniform() < 0.5) {
        // a damaged picture: bits flipped, cut short, or another type's header
        const bytes = png.slice(0, rng.nextUniform() < 0.3 ? pick(rng, png.length) : png.length);
        for (let k = pick(rng, 6); k > 0; k--) bytes[pick(rng, bytes.length)]! ^= 1 << pick(rng, 8);
        setOwn(control, "image", url(bytes, choose(rng, ["png", "jpeg", "gif"])));
      }
      const { spec, model } = await validateGenerate(body, catalog);
      const cost = await catalog.cost(model);
      if (!cost) throw new Error(`no cost for model ${model.id}`);
      const guided = spec.guidance !== 0 && spec.guidance !== 1;
      admitJob(
        cost,
        { count: spec.count, size: spec.size, steps: spec.steps, guided },
        budget,
        6e9,
        model.id,
      );
    },
    proper: (e) => e instanceof HttpError && e.status >= 400 && e.status < 500,
    dispose: () => {
      rmSync(fx.root, { recursive: true, force: true });
      rmSync(dirname(sd), { recursive: true, force: true });
    },
  };
}

const RAW =
  /Cannot read propert|Cannot set propert|is not a function|is not iterable|Invalid (typed )?array length|Maximum call stack|allocation failed|Cannot convert/;

/** Where in the sources an error was thrown (its first stack frame under src/), for the report. */
function origin(e: Error): string {
  const frame = e.stack?.split("\n").find((l) => l.includes("/src/"));
  const m = frame ? /\/(src\/[^:)]+:\d+)/.exec(frame) : null;
  return m ? ` (at ${m[1]})` : "";
}

/** Why a rejection is not a proper one (null when it is). */
function improper(e: unknown, target: Target): string | null {
  const why = reason(e, target);
  return why && e instanceof Error ? why + origin(e) : why;
}

function reason(e: unknown, target: Target): string | null {
  if (!(e instanceof Error)) return `threw a non-Error: ${String(e).slice(0, 100)}`;
  if (!e.message.trim()) return `${e.name} with an empty message`;
  if (e.message.includes("\n")) return `a message of several lines: ${e.message.slice(0, 200)}`;
  if (
    e instanceof TypeError ||
    e instanceof RangeError ||
    e instanceof ReferenceError ||
    e instanceof SyntaxError
  )
    return `${e.name}: ${e.message.slice(0, 200)}`;
  if (RAW.test(e.message)) return `a raw message: ${e.message.slice(0, 200)}`;
  if (target.proper && !target.proper(e))
    return `not a proper rejection (${e.name}): ${e.message.slice(0, 200)}`;
  return null;
}

async function makeTarget(name: TargetName): Promise<Target> {
  switch (name) {
    case "safetensors":
      return safetensorsTarget();
    case "model-config":
      return modelConfigTarget();
    case "train-config":
      return trainConfigTarget();
    case "scheduler":
      return schedulerTarget();
    case "studio-request":
      return studioTarget();
  }
}

/** Worker job: inputs [start, end) of a target, one message per input. */
export async function fuzzLoop(
  args: { target: TargetName; seed: number; start: number; end: number },
  ctx: WorkerContext<InputResult>,
): Promise<void> {
  const target = await makeTarget(args.target);
  const base = new Rng(args.seed).fold(args.target.length * 7919 + args.target.charCodeAt(0));
  try {
    for (let i = args.start; i < args.end && !ctx.signal.aborted; i++) {
      const rss0 = process.memoryUsage.rss();
      const t0 = performance.now();
      let outcome: Outcome = "accepted";
      let message: string | undefined;
      try {
        await target.run(base.fold(i), i);
      } catch (e) {
        const why = improper(e, target);
        outcome = why ? "crash" : "rejected";
        if (why) message = why;
      }
      const polluted = Object.keys(Object.prototype);
      if (polluted.length) {
        outcome = "crash";
        message = `Object.prototype polluted with ${polluted.join(", ")}`;
        for (const k of polluted) delete (Object.prototype as Record<string, unknown>)[k];
      }
      const mb = (process.memoryUsage.rss() - rss0) / 2 ** 20;
      ctx.post({ i, outcome, ms: performance.now() - t0, mb, ...(message ? { message } : {}) });
    }
  } finally {
    target.dispose?.();
  }
}
