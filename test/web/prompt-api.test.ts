/**
 * The studio's prompt flow over HTTP, on a tiny random StableDiffusionPipeline (test/support/tiny-sd.ts)
 * served beside a tiny class-conditional model: what /api/info says of a text-to-image model, a prompt
 * that streams VAE-decoded previews and ends in a PNG whose parameters carry the prompt, and a clear
 * 400 for every bad prompt and for a condition of the wrong kind.
 */
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { dirname } from "node:path";
import { after, before, test } from "node:test";
import { pngChunks, readPngText } from "../../src/io/png.ts";
import { type Studio, startStudio } from "../../src/web/server.ts";
import { makeTinySd, TINY_SD_CAPTIONS, TINY_SD_MAX_LENGTH } from "../support/tiny-sd.ts";
import { generate } from "./client.ts";
import { type Fixture, makeFixture } from "./fixture.ts";

let fx: Fixture;
let sdDir: string;
let studio: Studio;
let base: string;

before(async () => {
  fx = await makeFixture();
  sdDir = await makeTinySd();
  studio = await startStudio({ models: [fx.modelDir, sdDir], port: 0 });
  base = studio.url;
});

after(async () => {
  await studio.close();
  rmSync(fx.root, { recursive: true, force: true });
  rmSync(dirname(sdDir), { recursive: true, force: true });
});

/** Width, height and PNG colour type (0 grey, 2 RGB, 6 RGBA) of a PNG. */
function pngHeader(png: Uint8Array): { width: number; height: number; colorType: number } {
  const ihdr = [...pngChunks(png)].find((c) => c.type === "IHDR")!.data;
  const v = new DataView(ihdr.buffer, ihdr.byteOffset, ihdr.byteLength);
  return { width: v.getUint32(0), height: v.getUint32(4), colorType: ihdr[9]! };
}

const fromDataUrl = (u: unknown) => new Uint8Array(Buffer.from(String(u).split(",")[1]!, "base64"));

const fetchBytes = async (path: string) =>
  new Uint8Array(await (await fetch(new URL(path, base))).arrayBuffer());

test("info describes a text-to-image model by its images and its prompt box", async () => {
  const info = (await (await fetch(`${base}api/info`)).json()) as {
    models: Record<string, unknown>[];
  };
  const sd = info.models.find((m) => m["id"] === "tiny-sd");
  assert.ok(sd, JSON.stringify(info.models.map((m) => m["id"])));
  assert.equal(sd["prompts"], true);
  assert.equal(sd["promptExample"], TINY_SD_CAPTIONS[0]);
  assert.equal(sd["promptTokens"], TINY_SD_MAX_LENGTH - 2);
  assert.equal(sd["numClasses"], null);
  // 8×8 latents through a VAE of factor 2: 16×16 RGB images, sizes in steps of 2 (U-Net) × 2 (VAE)
  assert.equal(sd["sampleSize"], 16);
  assert.equal(sd["channels"], 3);
  assert.equal(sd["sizeMultiple"], 4);
  assert.deepEqual(sd["defaults"], {
    scheduler: "ddim",
    karras: false,
    steps: 4,
    guidance: 3,
    guidanceRescale: 0,
    eta: 0,
    seed: 0,
  });
  const tiny = info.models.find((m) => m["id"] === "tiny")!;
  assert.equal(tiny["prompts"], false);
  assert.equal(tiny["promptExample"], null);
  assert.equal(tiny["promptTokens"], null);
});

test("a prompt streams decoded x_t and x̂0 previews and ends with a PNG whose parameters carry the prompt", async () => {
  const prompt = "a red circle ☺";
  const body = { model: "tiny-sd", prompt, negativePrompt: "blue", steps: 3, seed: 7, count: 2 };
  const r = await generate(base, body);
  assert.equal(r.status, 200, r.error);
  const kinds = r.events.map((e) => e.event);
  assert.equal(kinds[0], "queued");
  assert.equal(kinds.at(-1), "done", JSON.stringify(r.events.at(-1)));
  const steps = r.events.filter((e) => e.event === "step");
  assert.deepEqual(
    steps.map((s) => s.data["i"]),
    [0, 1, 2],
  );
  // two 16×16 RGB images side by side with 2-pixel padding: decoded by the VAE, not 4-channel 8×8 latents
  for (const s of steps) {
    for (const key of ["x", "x0"]) {
      assert.deepEqual(pngHeader(fromDataUrl(s.data[key])), { width: 38, height: 20, colorType: 2 }, key);
    }
  }
  const done = r.events.at(-1)!.data as {
    image: string;
    params: { prompt: string; negativePrompt: string; label: unknown; size: number; guidance: number };
  };
  assert.equal(done.params.prompt, prompt);
  assert.equal(done.params.negativePrompt, "blue");
  assert.equal(done.params.label, null);
  assert.equal(done.params.size, 16);
  assert.equal(done.params.guidance, 3); // the model's recommendation
  const png = await fetchBytes(done.image);
  assert.deepEqual(pngHeader(png), { width: 38, height: 20, colorType: 2 });
  assert.equal(
    readPngText(png)["parameters"],
    `model: tiny-sd, scheduler: ddim, steps: 3, guidance: 3, guidance_rescale: 0, eta: 0, seed: 7, prompt: ${prompt}, negative_prompt: blue, count: 2, size: 16`,
  );

  // the same request gives the same pixels; another prompt other pixels (the prompt reaches the U-Net)
  const again = await generate(base, body);
  assert.deepEqual(await fetchBytes((again.events.at(-1)!.data as { image: string }).image), png);
  const other = await generate(base, { ...body, prompt: "a green triangle" });
  const otherPng = await fetchBytes((other.events.at(-1)!.data as { image: string }).image);
  assert.notDeepEqual(otherPng, png);
  assert.match(readPngText(otherPng)["parameters"]!, /prompt: a green triangle, negative_prompt: blue,/);
});

test("no negative prompt: the empty prompt, and none in the parameters", async () => {
  const r = await generate(base, { model: "tiny-sd", prompt: "a star", steps: 2, count: 1, size: 8 });
  assert.equal(r.status, 200, r.error);
  const done = r.events.at(-1)!.data as { image: string; params: { negativePrompt: string } };
  assert.equal(done.params.negativePrompt, "");
  const text = readPngText(await fetchBytes(done.image))["parameters"]!;
  assert.match(text, /prompt: a star, count: 1, size: 8$/);
  assert.doesNotMatch(text, /negative_prompt/);
});

test("bad prompts and conditions of the wrong kind are answered 400 with a message that names them", async () => {
  const sd = { model: "tiny-sd", steps: 2 };
  const long = Array.from({ length: 20 }, () => "circle").join(" ");
  const cases: [unknown, RegExp][] = [
    [
      sd,
      /^model "tiny-sd" is text-to-image: give a prompt, e.g. \{"prompt": "a red circle on a white background"\}$/,
    ],
    [{ ...sd, prompt: "" }, /^prompt is empty: describe the image/],
    [{ ...sd, prompt: "  \n " }, /^prompt is empty/],
    [{ ...sd, prompt: 42 }, /^prompt must be text, got number$/],
    [{ ...sd, prompt: null }, /^prompt must be text, got null$/],
    [{ ...sd, prompt: ["a", "b"] }, /^prompt must be text, got a list$/],
    [{ ...sd, prompt: long }, /^prompt is 20 tokens long; the text encoder reads at most 14: shorten it$/],
    [
      { ...sd, prompt: "a star", negativePrompt: long },
      /^negative prompt is 20 tokens long; the text encoder reads at most 14: shorten it$/,
    ],
    [
      { ...sd, prompt: "a star", negativePrompt: 3 },
      /^negativePrompt must be text \(or "" for none\), got number$/,
    ],
    [
      { ...sd, prompt: "a star", label: 1 },
      /^model "tiny-sd" is text-to-image: it takes a prompt, not a class label \(got label 1\)$/,
    ],
    [{ ...sd, prompt: "a star", label: "all" }, /it takes a prompt, not a class label/],
    [{ ...sd, prompt: "a star", size: 18 }, /^size must be a multiple of 4 for model "tiny-sd", got 18$/],
    [{ ...sd, prompt: "a star", steps: 0 }, /^steps must be an integer from 1 to 1000, got 0$/],
    [{ ...sd, prompt: "a star", count: 65 }, /^count must be an integer from 1 to 64, got 65$/],
    [
      { model: "tiny", prompt: "a cat" },
      /^model "tiny" is class-conditional: it takes a class label, not a prompt$/,
    ],
    [
      { model: "tiny", negativePrompt: "a cat" },
      /^model "tiny" is class-conditional: it takes a class label, not a negative prompt$/,
    ],
  ];
  for (const [body, message] of cases) {
    const r = await generate(base, body);
    assert.equal(r.status, 400, `${JSON.stringify(body)} → ${r.status}`);
    assert.match(r.error ?? "", message, JSON.stringify(body));
  }
  // nothing was queued by the refused requests
  assert.equal(studio.queue.stats.waiting, 0);
});
