/**
 * The studio in headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core): open the
 * page, generate and watch the step counter and live images, see the result and the gallery,
 * cancel a long job, prompt a text-to-image model (a tiny random StableDiffusionPipeline: the prompt
 * box replaces the class picker, previews are VAE-decoded images), and follow a training run while it
 * "trains" (the test appends to its files).
 * Screenshots go to DIFFUSE_STUDIO_SHOTS (a folder) when set, else to a temporary folder.
 */
import assert from "node:assert/strict";
import { appendFileSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, test } from "node:test";
import type { Page } from "playwright-core";
import { type Studio, startStudio } from "../../src/web/server.ts";
import { makeTinySd, TINY_SD_CAPTIONS } from "../support/tiny-sd.ts";
import { CHROMIUM, hasChromium, launchChromium } from "./browser.ts";
import { type Fixture, makeFixture, metricLines, writeSample } from "./fixture.ts";

const skip = hasChromium()
  ? false
  : `Chromium is not installed at ${CHROMIUM}: run scripts/setup-ci.sh (apt-get install chromium) to run the page tests`;

let fx: Fixture;
let sdDir: string;
let studio: Studio;
let browser: Awaited<ReturnType<typeof launchChromium>>;
let page: Page;
const shots = process.env["DIFFUSE_STUDIO_SHOTS"] ?? mkdtempSync(join(tmpdir(), "diffuse-shots-"));

before(async () => {
  if (skip) return;
  fx = await makeFixture();
  sdDir = await makeTinySd();
  studio = await startStudio({
    models: [fx.modelDir, sdDir],
    runs: [fx.runsDir],
    port: 0,
    watchIntervalMs: 100,
  });
  browser = await launchChromium();
  page = await browser.context.newPage();
  const problems: string[] = [];
  page.on("pageerror", (e) => problems.push(e.message));
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(m.text());
  });
  await page.goto(studio.url);
  await page.waitForSelector("body[data-ready=true]", { timeout: 20_000 });
  assert.deepEqual(problems, []);
});

after(async () => {
  if (skip) return;
  await browser.close();
  await studio.close();
  rmSync(fx.root, { recursive: true, force: true });
  rmSync(dirname(sdDir), { recursive: true, force: true });
  if (!process.env["DIFFUSE_STUDIO_SHOTS"]) rmSync(shots, { recursive: true, force: true });
});

test("generate: the step counter and live images follow every step, then the result and a gallery card", {
  skip,
  timeout: 60_000,
}, async () => {
  assert.equal(await page.locator("#model").inputValue(), "tiny");
  assert.deepEqual(await page.locator("#label option").allTextContents(), [
    "all classes (0–2)",
    "class 0",
    "class 1",
    "class 2",
  ]);
  // record every text the step counter shows (each update replaces its text node)
  await page.evaluate(() => {
    const w = window as unknown as { counterTexts: string[] };
    w.counterTexts = [];
    new MutationObserver((records) => {
      for (const r of records)
        for (const n of Array.from(r.addedNodes)) w.counterTexts.push(n.textContent ?? "");
    }).observe(document.getElementById("step-counter")!, { childList: true });
  });
  await page.locator("#steps").fill("12");
  await page.locator("#count").fill("6");
  await page.locator("#scheduler").selectOption("euler");
  await page.click("#generate");
  await page.waitForSelector(".card", { timeout: 30_000 });
  const texts = await page.evaluate(() => (window as unknown as { counterTexts: string[] }).counterTexts);
  const steps = texts.filter((t) => /^step \d+ \/ 12$/.test(t));
  assert.ok(steps.length >= 3 && steps.includes("step 12 / 12"), texts.join(" | "));
  assert.match((await page.locator("#live-x").getAttribute("src"))!, /^data:image\/png;base64,/);
  assert.match((await page.locator("#live-x0").getAttribute("src"))!, /^data:image\/png;base64,/);
  await page.waitForFunction(
    () => (document.getElementById("result-image") as HTMLImageElement).naturalWidth > 0,
  );
  await page.waitForFunction(
    () => (document.getElementById("result-anim") as HTMLImageElement).naturalWidth > 0,
  );
  assert.match(await page.locator("#result-params").innerText(), /euler[\s\S]*12[\s\S]*seed\s+0/);
  assert.match((await page.locator("#download-png").getAttribute("href"))!, /\/image\.png\?download=1$/);
  assert.equal(await page.locator(".card").count(), 1);
  await page.screenshot({ path: join(shots, "studio-generate.png"), fullPage: true });

  // one click on Re-run repeats the generation with the same seed
  await page.locator(".card button").first().click();
  await page.waitForFunction(() => document.querySelectorAll(".card").length === 2, undefined, {
    timeout: 30_000,
  });
  const [a, b] = await page
    .locator(".card img")
    .evaluateAll((imgs) => imgs.map((i) => (i as HTMLImageElement).src));
  const bytes = async (u: string) => Buffer.from(await (await fetch(u)).arrayBuffer());
  assert.deepEqual(await bytes(a!), await bytes(b!));
});

test("cancel stops a long generation", { skip, timeout: 60_000 }, async () => {
  await page.locator("#steps").fill("100");
  await page.locator("#count").fill("64");
  await page.locator("#size").fill("32");
  await page.click("#generate");
  await page.waitForFunction(
    () => /^step /.test(document.getElementById("step-counter")!.textContent ?? ""),
    undefined,
    {
      timeout: 30_000,
    },
  );
  await page.click("#cancel");
  await page.waitForFunction(
    () => document.getElementById("step-counter")!.textContent === "cancelled",
    undefined,
    {
      timeout: 30_000,
    },
  );
  assert.equal(await page.locator("#generate").isDisabled(), false);
  assert.equal(await page.locator(".card").count(), 2);
  await page.locator("#size").fill("8");
});

test("prompt: a text model shows a prompt box; Enter generates with decoded previews, the prompt in the result and the card", {
  skip,
  timeout: 60_000,
}, async () => {
  assert.equal(await page.locator("#label-field").isVisible(), true);
  assert.equal(await page.locator("#prompt-field").isVisible(), false);
  await page.locator("#model").selectOption("tiny-sd");
  assert.equal(await page.locator("#label-field").isVisible(), false);
  assert.equal(await page.locator("#prompt-field").isVisible(), true);
  assert.equal(await page.locator("#negative-field").isVisible(), true);
  assert.equal(await page.locator("#prompt").getAttribute("placeholder"), TINY_SD_CAPTIONS[0]);
  assert.equal(await page.locator("#prompt-hint").textContent(), "up to 14 tokens");
  assert.match((await page.locator("#model-note").textContent())!, /text to image.*16×16/);
  // the model's own settings: 16×16 images, its recommended 4 steps
  assert.equal(await page.locator("#size").inputValue(), "16");
  assert.equal(await page.locator("#steps").inputValue(), "4");

  // an empty prompt: the server's message, nothing queued
  await page.click("#generate");
  await page.waitForFunction(() =>
    /prompt is empty/.test(document.getElementById("gen-error")!.textContent ?? ""),
  );
  assert.equal(await page.locator(".card").count(), 2);

  await page.evaluate(() => {
    const w = window as unknown as { counterTexts: string[]; previewWidths: number[] };
    w.counterTexts = [];
    w.previewWidths = [];
    new MutationObserver((records) => {
      for (const r of records)
        for (const n of Array.from(r.addedNodes)) w.counterTexts.push(n.textContent ?? "");
    }).observe(document.getElementById("step-counter")!, { childList: true });
    const x0 = document.getElementById("live-x0") as HTMLImageElement;
    x0.addEventListener("load", () => w.previewWidths.push(x0.naturalWidth));
  });
  await page.locator("#steps").fill("6");
  await page.locator("#count").fill("2");
  await page.locator("#negative-prompt").fill("blue");
  await page.locator("#prompt").fill("a red circle");
  await page.locator("#prompt").press("Enter");
  await page.waitForFunction(() => document.querySelectorAll(".card").length === 3, undefined, {
    timeout: 30_000,
  });
  assert.equal(await page.locator("#gen-error").textContent(), "");
  assert.equal(await page.locator("#prompt").inputValue(), "a red circle"); // Enter submitted, added no line
  const seen = await page.evaluate(() => {
    const w = window as unknown as { counterTexts: string[]; previewWidths: number[] };
    return { texts: w.counterTexts, widths: w.previewWidths };
  });
  const steps = seen.texts.filter((t) => /^step \d+ \/ 6$/.test(t));
  assert.ok(steps.length >= 2 && steps.includes("step 6 / 6"), seen.texts.join(" | "));
  // two 16×16 RGB images with padding: the x̂0 previews are decoded images, not 8×8 latents
  assert.ok(seen.widths.length >= 1 && seen.widths.every((w) => w === 38), seen.widths.join(","));
  await page.waitForFunction(
    () => (document.getElementById("result-image") as HTMLImageElement).naturalWidth === 38,
  );
  const shown = await page.locator("#result-params").innerText();
  assert.match(shown, /prompt\s+a red circle/);
  assert.match(shown, /negative prompt\s+blue/);
  assert.doesNotMatch(shown, /class/);
  assert.match((await page.locator(".card p").first().textContent())!, /tiny-sd · “a red circle” ·/);
  await page.screenshot({ path: join(shots, "studio-prompt.png"), fullPage: true });

  // back to the class model: the class picker returns
  await page.locator("#model").selectOption("tiny");
  assert.equal(await page.locator("#label-field").isVisible(), true);
  assert.equal(await page.locator("#prompt-field").isVisible(), false);
  // the prompt card's Re-run brings the text model, its prompt and negative prompt back
  await page.evaluate(() => {
    (document.getElementById("prompt") as HTMLTextAreaElement).value = "";
  });
  await page.locator(".card button").first().click();
  await page.waitForFunction(() => document.querySelectorAll(".card").length === 4, undefined, {
    timeout: 30_000,
  });
  assert.equal(await page.locator("#model").inputValue(), "tiny-sd");
  assert.equal(await page.locator("#prompt").inputValue(), "a red circle");
  assert.equal(await page.locator("#negative-prompt").inputValue(), "blue");
  const [a, b] = await page
    .locator(".card img")
    .evaluateAll((imgs) => imgs.map((i) => (i as HTMLImageElement).src));
  const bytes = async (u: string) => Buffer.from(await (await fetch(u)).arrayBuffer());
  assert.deepEqual(await bytes(a!), await bytes(b!));
});

test("training: a loss plot with axes and the latest grid, updating while the run writes", {
  skip,
  timeout: 60_000,
}, async () => {
  await page.click("#tab-training");
  await page.waitForSelector("#loss-plot path.smooth");
  const labels = await page.locator("#loss-plot text").allTextContents();
  assert.ok(labels.includes("training step") && labels.includes("loss"), labels.join(","));
  assert.ok(labels.includes("0") && labels.includes("100"), `x ticks: ${labels.join(",")}`);
  assert.ok(labels.filter((t) => /^\d*\.?\d+$/.test(t)).length >= 6, labels.join(","));
  assert.match(await page.locator("#run-stats").innerText(), /30 \/ 100/);
  // the run goes on: more metrics and a new grid appear without reloading
  const pointsBefore = (await page.locator("#loss-plot path.raw").getAttribute("d"))!.split("L").length;
  appendFileSync(join(fx.runDir, "metrics.jsonl"), metricLines(4, 8));
  mkdirSync(join(fx.runDir, "samples"), { recursive: true });
  writeSample(fx.runDir, 80);
  await page.waitForFunction(() => /80 \/ 100/.test(document.getElementById("run-stats")!.textContent ?? ""));
  await page.waitForFunction(() => /step 80/.test(document.getElementById("sample-step")!.textContent ?? ""));
  const pointsAfter = (await page.locator("#loss-plot path.raw").getAttribute("d"))!.split("L").length;
  assert.equal(pointsAfter, pointsBefore + 5);
  await page.waitForFunction(
    () => (document.getElementById("run-sample") as HTMLImageElement).naturalWidth > 0,
  );
  await page.screenshot({ path: join(shots, "studio-training.png"), fullPage: true });
});
