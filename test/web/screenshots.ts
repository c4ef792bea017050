/**
 * Takes the studio's screenshots for docs/ (not a test): mid-generation, the finished result with a
 * gallery, and the training view.
 *
 *   node --import tsx test/web/screenshots.ts --model DIR|NAME [--runs DIR] [--out docs]
 *     [--steps 40] [--seed 7] [--scheduler dpm++2m] [--guidance 1.5]
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { startStudio } from "../../src/web/server.ts";
import { launchChromium } from "./browser.ts";

const { values } = parseArgs({
  options: {
    model: { type: "string", multiple: true },
    runs: { type: "string", multiple: true },
    out: { type: "string", default: "docs" },
    steps: { type: "string", default: "40" },
    seed: { type: "string", default: "7" },
    scheduler: { type: "string", default: "dpm++2m" },
    guidance: { type: "string", default: "1.5" },
  },
});
const out = values.out!;
mkdirSync(out, { recursive: true });
const studio = await startStudio({ models: values.model ?? [], runs: values.runs ?? [], port: 0 });
const browser = await launchChromium();
try {
  const page = await browser.context.newPage();
  await page.setViewportSize({ width: 1280, height: 900 });
  await page.goto(studio.url);
  await page.waitForSelector("body[data-ready=true]");
  const steps = Number(values.steps);
  // a first generation for the gallery, with another sampler
  await page.locator("#steps").fill(String(steps));
  await page.locator("#seed").fill("3");
  await page.locator("#scheduler").selectOption("euler-a");
  await page.click("#generate");
  await page.waitForSelector(".card", { timeout: 600_000 });
  // the shown one: catch it halfway
  await page.locator("#scheduler").selectOption(values.scheduler!);
  await page.locator("#guidance").fill(values.guidance!);
  await page.locator("#seed").fill(values.seed!);
  await page.click("#generate");
  const half = `step ${Math.ceil(steps / 3)} / ${steps}`;
  await page.waitForFunction(
    (h) => {
      const t = document.getElementById("step-counter")!.textContent ?? "";
      const m = /^step (\d+) \/ (\d+)$/.exec(t);
      return m !== null && Number(m[1]) >= Number(h.split(" ")[1]);
    },
    half,
    { timeout: 600_000, polling: 10 },
  );
  await page.screenshot({ path: join(out, "studio-live.png") });
  await page.waitForFunction(() => document.querySelectorAll(".card").length === 2, undefined, {
    timeout: 600_000,
  });
  await page.waitForFunction(
    () => (document.getElementById("result-anim") as HTMLImageElement).naturalWidth > 0,
  );
  await page.screenshot({ path: join(out, "studio-generate.png"), fullPage: true });
  await page.click("#tab-training");
  await page.waitForTimeout(2000);
  await page.screenshot({ path: join(out, "studio-training.png") });
  console.log(`screenshots in ${out}/studio-{live,generate,training}.png`);
} finally {
  await browser.close();
  await studio.close();
}
