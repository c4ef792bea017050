/** Where the package's own files are, from src/ (tsx) or dist/ alike; how the user runs the command. */
import { realpathSync } from "node:fs";
import { delimiter, join } from "node:path";
import { fileURLToPath } from "node:url";

/** The package root folder. */
export const packageRoot = (): string => fileURLToPath(new URL("../../", import.meta.url));

/** A module URL next to the running code: `moduleUrl("train/trainer")` → .ts under tsx, .js in dist. */
export function moduleUrl(path: string): URL {
  const ext = import.meta.url.endsWith(".ts") ? ".ts" : ".js";
  return new URL(`../${path}${ext}`, import.meta.url);
}

/**
 * How the user runs diffuse again, for the hints the commands print: "diffuse" when that name on the
 * PATH is this package's command (a global install, npm link); otherwise, and whenever npm or npx
 * started us (they put node_modules/.bin on the PATH only for the command they run), "npx diffuse",
 * which works in a checkout and in a project that depends on diffuse.
 */
export function diffuseCommand(env: NodeJS.ProcessEnv = process.env): string {
  if (env["npm_command"] !== undefined) return "npx diffuse";
  let ours: string;
  try {
    ours = realpathSync(join(packageRoot(), "bin", "diffuse.js"));
  } catch {
    return "npx diffuse";
  }
  for (const dir of (env["PATH"] ?? "").split(delimiter)) {
    if (dir === "") continue;
    try {
      if (realpathSync(join(dir, "diffuse")) === ours) return "diffuse";
    } catch {
      // not there
    }
  }
  return "npx diffuse";
}
