/**
 * Headless Chromium for the studio's page tests: Debian's /usr/bin/chromium driven by
 * playwright-core (no browser download). Fresh profile, no network services, no GPU.
 */
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type BrowserContext, chromium } from "playwright-core";

export const CHROMIUM = process.env["DIFFUSE_CHROMIUM"] ?? "/usr/bin/chromium";

export const hasChromium = (): boolean => existsSync(CHROMIUM);

/** A browser context on a fresh profile folder (playwright passes it as --user-data-dir), removed on close. */
export async function launchChromium(): Promise<{ context: BrowserContext; close(): Promise<void> }> {
  const profile = mkdtempSync(join(tmpdir(), "diffuse-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    viewport: { width: 1280, height: 860 },
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
