/**
 * The studio's control image and LoRA picker in headless Chromium (test/web/browser.ts), on a tiny
 * random StableDiffusionControlNetPipeline and a random LoRA file (test/support/tiny-controlnet.ts):
 * the control panel and the LoRA list appear for the model that takes them; a stroke drawn on the
 * canvas turns control on, and the generation shows the image the ControlNet read and names the
 * control and the LoRA among the result's parameters; a loaded picture asks for Canny edges.
 * Screenshots go to DIFFUSE_STUDIO_SHOTS (a folder) when set, else to a temporary folder.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, test } from "node:test";
import type { Page } from "playwright-core";
import { encodePng } from "../../src/io/png.ts";
import { type Studio, startStudio } from "../../src/web/server.ts";
import { makeTinyControlNetSd, makeTinyLora } from "../support/tiny-controlnet.ts";
import { makeTinySd, TINY_SD_CAPTIONS } from "../support/tiny-sd.ts";
import { CHROMIUM, hasChromium, launchChromium } from "./browser.ts";

const skip = hasChromium()
  ? false
  : `Chromium is not installed at ${CHROMIUM}: run scripts/setup-ci.sh (apt-get install chromium) to run the page tests`;

let sd: string;
let studio: Studio;
let browser: Awaited<ReturnType<typeof launchChromium>>;
let page: Page;
const problems: string[] = [];
const shots = process.env["DIFFUSE_STUDIO_SHOTS"] ?? mkdtempSync(join(tmpdir(), "diffuse-shots-"));

before(async () => {
  if (skip) return;
  sd = await makeTinySd();
  const cnDir = await makeTinyControlNetSd(sd);
  const lora = join(dirname(sd), "style.safetensors");
  await makeTinyLora(sd, lora);
  studio = await startStudio({ models: [sd, cnDir], loras: [lora], runs: [], port: 0 });
  browser = await launchChromium();
  page = await browser.context.newPage();
  page.on("pageerror", (e) => problems.push(e.message));
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(m.text());
  });
  await page.goto(studio.url);
  await page.waitForSelector("body[data-ready=true]", { timeout: 20_000 });
});

after(async () => {
  if (skip) return;
  await browser.close();
  await studio.close();
  rmSync(dirname(sd), { recursive: true, force: true });
  if (!process.env["DIFFUSE_STUDIO_SHOTS"]) rmSync(shots, { recursive: true, force: true });
});

test("draw a control image, pick a LoRA, generate: the ControlNet's image is shown and the result names both", {
  skip,
  timeout: 90_000,
}, async () => {
  await page.selectOption("#model", "tiny-sd");
  assert.equal(await page.locator("#control-field").isHidden(), true, "no ControlNet: no control panel");
  assert.equal(await page.locator("#lora-field").isVisible(), true);
  await page.selectOption("#model", "tiny-sd-controlnet");
  assert.equal(await page.locator("#control-field").isVisible(), true);
  assert.deepEqual(await page.locator("#lora-list span").allTextContents(), ["style"]);

  // a stroke across the canvas
  const box = (await page.locator("#control-canvas").boundingBox())!;
  await page.mouse.move(box.x + box.width * 0.2, box.y + box.height * 0.5);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.5, box.y + box.height * 0.3, { steps: 5 });
  await page.mouse.move(box.x + box.width * 0.8, box.y + box.height * 0.6, { steps: 5 });
  await page.mouse.up();
  assert.equal(await page.locator("#control-on").isChecked(), true, "drawing turns control on");
  const lit = await page.evaluate(() => {
    const c = document.getElementById("control-canvas") as HTMLCanvasElement;
    const d = c.getContext("2d")!.getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i]! > 128) n++;
    return n;
  });
  assert.ok(lit > 50, `the stroke is white on the canvas (${lit} pixels)`);

  await page.locator('#lora-list input[data-lora="style"]').check();
  await page.locator('input[data-lora-scale="style"]').fill("0.5");
  await page.fill("#prompt", TINY_SD_CAPTIONS[0]!);
  await page.fill("#steps", "3");
  await page.click("#generate");
  await page.waitForFunction(
    () => /^done/.test(document.getElementById("step-counter")!.textContent ?? ""),
    null,
    {
      timeout: 60_000,
    },
  );
  const read = await page.locator("#control-edges").getAttribute("src");
  assert.match(read ?? "", /^data:image\/png;base64,/, "the image the ControlNet read is shown");
  const params = await page.locator("#result-params div").allTextContents(); // "<dt><dd>" each
  assert.ok(params.includes("controlscale 1"), params.join(" | "));
  assert.ok(params.includes("LoRAstyle × 0.5"), params.join(" | "));
  await page.screenshot({ path: join(shots, "control-lora.png"), fullPage: true });

  // a loaded picture (not an edge map): Canny is asked for
  const side = 20;
  const px = new Uint8Array(side * side * 3).fill(200);
  const file = join(dirname(sd), "picture.png");
  writeFileSync(file, encodePng({ width: side, height: side, channels: 3, data: px }));
  await page.locator("#control-detect").uncheck();
  await page.setInputFiles("#control-file", file);
  await page.waitForFunction(() => (document.getElementById("control-detect") as HTMLInputElement).checked);
  assert.deepEqual(problems, []);
});
