/**
 * The studio's control image over HTTP, on a tiny random StableDiffusionControlNetPipeline (the tiny
 * Stable Diffusion pipeline of test/support/tiny-sd.ts with a ControlNet made from its U-Net, its zero
 * convolutions made random so that it steers) served beside the plain pipeline: /api/info says which
 * model takes a control image (with its Canny settings), a control image steers the images and comes
 * back among the parameters as the image the ControlNet read (its edges when Canny was asked for), the
 * PNG's parameters name it, and every bad control request is a 400 that says why. LoRA files: one
 * given to the studio (--lora) is offered with every text-to-image model, a finetune run's with its
 * base only; a request picks them by id with a scale (the images change, the PNG names them), and bad
 * picks are 400s.
 */
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { after, before, test } from "node:test";
import { decodeImage } from "../../src/io/image-decode.ts";
import { encodePng, readPngText } from "../../src/io/png.ts";
import { type Studio, startStudio } from "../../src/web/server.ts";
import { makeTinyControlNetSd, makeTinyLora } from "../support/tiny-controlnet.ts";
import { makeTinySd, TINY_SD_CAPTIONS } from "../support/tiny-sd.ts";
import { generate } from "./client.ts";

let sd: string;
let cnDir: string;
let studio: Studio;
let base: string;

before(async () => {
  sd = await makeTinySd();
  cnDir = await makeTinyControlNetSd(sd);
  // a random LoRA: given to the studio, and as a finetune run's export (with its base recorded)
  const lora = join(dirname(sd), "style.safetensors");
  await makeTinyLora(sd, lora);
  const run = join(dirname(sd), "runs", "ft");
  mkdirSync(join(run, "model"), { recursive: true });
  copyFileSync(lora, join(run, "model", "pytorch_lora_weights.safetensors"));
  writeFileSync(join(run, "model", "finetune.json"), JSON.stringify({ base: sd, method: "lora" }));
  writeFileSync(join(run, "metrics.jsonl"), "");
  studio = await startStudio({
    models: [sd, cnDir],
    runs: [join(dirname(sd), "runs")],
    loras: [lora],
    port: 0,
  });
  base = studio.url;
});

after(async () => {
  await studio.close();
  rmSync(dirname(sd), { recursive: true, force: true });
});

/** A 24×24 PNG data URL: a white square outline on black (or a filled grey square: a picture, not edges). */
function controlPng(filled = false): string {
  const side = 24;
  const px = new Uint8Array(side * side * 3);
  for (let y = 4; y < 20; y++)
    for (let x = 4; x < 20; x++)
      if (filled || y === 4 || y === 19 || x === 4 || x === 19)
        px.fill(filled ? 160 : 255, (y * side + x) * 3, (y * side + x + 1) * 3);
  return `data:image/png;base64,${Buffer.from(encodePng({ width: side, height: side, channels: 3, data: px })).toString("base64")}`;
}

const fromDataUrl = (u: unknown) => new Uint8Array(Buffer.from(String(u).split(",")[1]!, "base64"));
const request = { prompt: TINY_SD_CAPTIONS[0]!, steps: 2, seed: 3, count: 2 };
const finalPng = async (events: { event: string; data: Record<string, unknown> }[]) => {
  const done = events.find((e) => e.event === "done")!;
  return new Uint8Array(await (await fetch(new URL(String(done.data["image"]), base))).arrayBuffer());
};

test("info: the ControlNet pipeline takes a control image (with its Canny settings), the plain one does not", async () => {
  const info = (await (await fetch(`${base}api/info`)).json()) as { models: Record<string, unknown>[] };
  const cn = info.models.find((m) => m["id"] === "tiny-sd-controlnet");
  const plain = info.models.find((m) => m["id"] === "tiny-sd");
  assert.deepEqual(cn?.["control"], { canny: { sigma: 1, low: 0.05, high: 0.1 } });
  assert.equal(plain?.["control"], null);
});

test("a control image steers the images and comes back as the image the ControlNet read; Canny finds a picture's edges", async () => {
  const plain = await generate(base, { model: "tiny-sd-controlnet", ...request });
  assert.equal(plain.status, 200, plain.error);
  const steered = await generate(base, {
    model: "tiny-sd-controlnet",
    ...request,
    control: { image: controlPng(), scale: 0.8, guessMode: true },
  });
  assert.equal(steered.status, 200, steered.error);
  const queued = steered.events.find((e) => e.event === "queued")!.data["params"] as Record<string, unknown>;
  const control = queued["control"] as Record<string, unknown>;
  assert.equal(control["scale"], 0.8);
  assert.equal(control["guessMode"], true);
  assert.equal(control["detect"], "none");
  const read = decodeImage(fromDataUrl(control["image"]));
  assert.equal(read.width, 16); // resized to the model's 16×16 images
  const png = await finalPng(steered.events);
  assert.notDeepEqual(png, await finalPng(plain.events), "the control image changes the images");
  assert.match(readPngText(png)["parameters"]!, /control: an image:0\.8 \(guess mode\)/);

  // a filled square is a picture: Canny keeps its outline only
  const edged = await generate(base, {
    model: "tiny-sd-controlnet",
    ...request,
    control: { image: controlPng(true), detect: "canny" },
  });
  assert.equal(edged.status, 200, edged.error);
  const p = edged.events.find((e) => e.event === "queued")!.data["params"] as Record<string, unknown>;
  const edges = decodeImage(fromDataUrl((p["control"] as Record<string, unknown>)["image"]));
  const on = [...edges.data].filter((v, i) => i % edges.channels === 0 && v === 255).length;
  assert.ok(on > 8 && on < 16 * 16 * 0.5, `an outline, not the filled square: ${on} edge pixels`);
  assert.match(
    readPngText(await finalPng(edged.events))["parameters"]!,
    /control: canny edges of an image:1/,
  );
});

test("bad control requests are refused with the reason", async () => {
  const bad = async (body: Record<string, unknown>, re: RegExp) => {
    const r = await generate(base, { ...request, ...body });
    assert.equal(r.status, 400, JSON.stringify(body).slice(0, 80));
    assert.match(r.error!, re);
  };
  await bad(
    { model: "tiny-sd", control: { image: controlPng() } },
    /has no ControlNet: it takes no control image/,
  );
  await bad({ model: "tiny-sd-controlnet", control: "edges.png" }, /control must be an object/);
  await bad(
    { model: "tiny-sd-controlnet", control: { image: "edges.png" } },
    /control.image must be a PNG or JPEG image as a data URL/,
  );
  await bad(
    { model: "tiny-sd-controlnet", control: { image: "data:image/png;base64,AAAA" } },
    /cannot read control.image: not a PNG or JPEG/,
  );
  await bad(
    { model: "tiny-sd-controlnet", control: { image: controlPng(), scale: 11 } },
    /control.scale must be a number from 0 to 10, got 11/,
  );
  await bad(
    { model: "tiny-sd-controlnet", control: { image: controlPng(), guessMode: "yes" } },
    /control.guessMode must be true or false/,
  );
  await bad(
    { model: "tiny-sd-controlnet", control: { image: controlPng(), detect: "sobel" } },
    /control.detect must be "none"/,
  );
  await bad(
    { model: "tiny-sd-controlnet", control: { image: controlPng(), strength: 1 } },
    /unknown field "control.strength"/,
  );
});

test("LoRA files: offered by id (a given file with every text-to-image model, a finetune run's with its base), applied at their scales", async () => {
  const info = (await (await fetch(`${base}api/info`)).json()) as { models: Record<string, unknown>[] };
  assert.deepEqual(info.models.find((m) => m["id"] === "tiny-sd")?.["loras"], ["style", "run-ft"]);
  assert.deepEqual(info.models.find((m) => m["id"] === "tiny-sd-controlnet")?.["loras"], ["style"]);
  const plain = await generate(base, { model: "tiny-sd", ...request });
  const styled = await generate(base, { model: "tiny-sd", ...request, loras: [{ id: "style", scale: 0.5 }] });
  assert.equal(styled.status, 200, styled.error);
  const params = styled.events.find((e) => e.event === "queued")!.data["params"] as Record<string, unknown>;
  assert.deepEqual(params["loras"], [{ id: "style", scale: 0.5 }]);
  const png = await finalPng(styled.events);
  assert.notDeepEqual(png, await finalPng(plain.events), "the adapter changes the images");
  assert.match(readPngText(png)["parameters"]!, /lora: style:0\.5/);
  const both = await generate(base, {
    model: "tiny-sd",
    ...request,
    loras: [
      { id: "style", scale: 0.5 },
      { id: "run-ft", scale: -0.5 },
    ],
  });
  assert.equal(both.status, 200, both.error);
  // the same file at +0.5 and −0.5 cancels: the base's images again (to a level of 8 bits)
  const a = decodeImage(await finalPng(both.events)).data;
  const b = decodeImage(await finalPng(plain.events)).data;
  assert.ok(
    a.every((v, i) => Math.abs(v - b[i]!) <= 1),
    "+0.5 and −0.5 of one adapter is the base",
  );

  const bad = async (body: Record<string, unknown>, re: RegExp) => {
    const r = await generate(base, { ...request, ...body });
    assert.equal(r.status, 400, JSON.stringify(body).slice(0, 80));
    assert.match(r.error!, re);
  };
  await bad(
    { model: "tiny-sd-controlnet", loras: [{ id: "run-ft" }] },
    /"run-ft" is not a LoRA file offered for model "tiny-sd-controlnet" \(offered: style\)/,
  );
  await bad({ model: "tiny-sd", loras: { id: "style" } }, /loras must be a list/);
  await bad(
    { model: "tiny-sd", loras: [{ id: "style", scale: 11 }] },
    /loras\[0\].scale must be a number from -10 to 10/,
  );
  await bad({ model: "tiny-sd", loras: [{ id: "style" }, { id: "style" }] }, /"style" is given twice/);
  await bad({ model: "tiny-sd", loras: [{ id: "style", weight: 1 }] }, /unknown field "loras\[0\].weight"/);
});
