/** Where the package's own files are, from src/ (tsx) or dist/ alike. */
import { fileURLToPath } from "node:url";

/** The package root folder. */
export const packageRoot = (): string => fileURLToPath(new URL("../../", import.meta.url));

/** A module URL next to the running code: `moduleUrl("train/trainer")` → .ts under tsx, .js in dist. */
export function moduleUrl(path: string): URL {
  const ext = import.meta.url.endsWith(".ts") ? ".ts" : ".js";
  return new URL(`../${path}${ext}`, import.meta.url);
}
