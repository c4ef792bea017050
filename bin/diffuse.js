#!/usr/bin/env node
// The diffuse CLI. In a source checkout (tsx installed as a dev dependency) it runs the TypeScript
// sources directly, so it never runs a stale build; an installed package runs its compiled dist/.
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { withHugePages } from "./hugepages.js";

// the studio is a server started from a terminal or by npm: it ends with whoever started it (npm's
// shell wrapper may die alone), where a training run may be left running on purpose (nohup)
await withHugePages({ followParent: process.argv[2] === "serve" });

const src = new URL("../src/cli/main.ts", import.meta.url);
const dist = new URL("../dist/cli/main.js", import.meta.url);
let hasTsx = false;
try {
  createRequire(import.meta.url).resolve("tsx/esm/api");
  hasTsx = true;
} catch {
  hasTsx = false;
}
let main;
if (hasTsx && existsSync(src)) {
  const { register } = await import("tsx/esm/api");
  register();
  ({ main } = await import(src.href));
} else if (existsSync(dist)) {
  ({ main } = await import(dist.href));
} else {
  console.error(
    "diffuse: no compiled build (dist/) and no tsx to run the sources; run `npm run build` first",
  );
  process.exit(1);
}
process.exitCode = await main(process.argv.slice(2));
