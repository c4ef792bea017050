// What the commands tell the user to run next, and `serve --open` where no browser can open: the hint
// names a command that works here (`diffuse` only when it is this package's on the PATH, else
// `npx diffuse`); a browser that cannot open is one line saying why.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { diffuseCommand, packageRoot } from "../../src/cli/paths.ts";
import { run as train } from "../../src/cli/train.ts";
import { type Fixture, makeFixture, TINY_UNET } from "../web/fixture.ts";

const bin = fileURLToPath(new URL("../../bin/diffuse.js", import.meta.url));
const dir = mkdtempSync(join(tmpdir(), "diffuse-hints-"));
let fx: Fixture;
before(async () => {
  fx = await makeFixture();
});
after(() => {
  rmSync(dir, { recursive: true, force: true });
  rmSync(fx.root, { recursive: true, force: true });
});

/** A folder holding one executable `name` (a shell script with `body`), for a PATH. */
function pathWith(name: string, body: string): string {
  const d = mkdtempSync(join(dir, "bin-"));
  writeFileSync(join(d, name), `#!/bin/sh\n${body}\n`);
  chmodSync(join(d, name), 0o755);
  return d;
}

test("the hint says diffuse only when that name on the PATH is this package's command", () => {
  const linked = mkdtempSync(join(dir, "linked-"));
  symlinkSync(join(packageRoot(), "bin", "diffuse.js"), join(linked, "diffuse"));
  assert.equal(diffuseCommand({ PATH: linked }), "diffuse");
  // through npm or npx, node_modules/.bin is on the PATH for that one command only
  assert.equal(diffuseCommand({ PATH: linked, npm_command: "exec" }), "npx diffuse");
  // another program called diffuse (a diff viewer) is not this one
  assert.equal(diffuseCommand({ PATH: pathWith("diffuse", "exit 0") }), "npx diffuse");
  assert.equal(diffuseCommand({ PATH: "" }), "npx diffuse");
  assert.equal(diffuseCommand({}), "npx diffuse");
});

test("a finished training run's hint runs diffuse the way it runs here", { timeout: 120_000 }, async () => {
  const config = join(dir, "tiny.json");
  writeFileSync(
    config,
    JSON.stringify({
      model: { _class_name: "UNet2DModel", ...TINY_UNET, sample_size: 32, num_class_embeds: 11 },
      scheduler: { _class_name: "DDPMScheduler" },
      data: { dataset: "mnist", size: 32 },
      training: { steps: 1, batch_size: 2, threads: 1 },
      output: { sample_every: 0 },
    }),
  );
  const lines: string[] = [];
  const log = console.log;
  const write = process.stderr.write;
  console.log = (...a: unknown[]) => lines.push(a.join(" "));
  process.stderr.write = (() => true) as typeof process.stderr.write;
  try {
    await train(["--config", config, "--out", join(dir, "run")]);
  } finally {
    console.log = log;
    process.stderr.write = write;
  }
  const out = lines.join("\n");
  assert.match(out, /done: 1 steps/);
  assert.ok(out.includes(`Sample it: ${diffuseCommand()} sample --model `), out);
  if (diffuseCommand() !== "diffuse") assert.match(out, /Sample it: npx diffuse sample/);
});

/** Starts `diffuse serve --open` with `env` and resolves with its output once the studio is up (and a moment after). */
async function serveOpen(env: NodeJS.ProcessEnv): Promise<string> {
  const child: ChildProcess = spawn(
    process.execPath,
    [bin, "serve", "--model", fx.modelDir, "--port", "0", "--open"],
    { stdio: ["ignore", "pipe", "pipe"], env: { ...env, HOME: dir } },
  );
  let out = "";
  const exited = new Promise<void>((r) => child.on("exit", () => r()));
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no answer within 30 s:\n${out}`)), 30_000);
      const onData = (b: Buffer) => {
        out += b.toString();
        if (/could not open a browser/.test(out)) {
          clearTimeout(timer);
          resolve();
        }
      };
      child.stdout!.on("data", onData);
      child.stderr!.on("data", onData);
    });
  } finally {
    child.kill("SIGINT");
    await exited;
  }
  return out;
}

const linux = process.platform === "linux" ? false : "xdg-open is the Linux opener";

test("serve --open says why no browser opened: no display", { skip: linux, timeout: 60_000 }, async () => {
  const out = await serveOpen({ PATH: pathWith("xdg-open", "exit 0") });
  assert.match(
    out,
    /\(could not open a browser: no display here \(DISPLAY and WAYLAND_DISPLAY are unset\); open http:\/\/127\.0\.0\.1:\d+\/ yourself\)/,
  );
});

test("serve --open says why no browser opened: the opener failed", {
  skip: linux,
  timeout: 60_000,
}, async () => {
  const out = await serveOpen({ PATH: pathWith("xdg-open", "exit 3"), DISPLAY: ":99" });
  assert.match(
    out,
    /\(could not open a browser: xdg-open exited with status 3; open http:\/\/\S+ yourself\)/,
  );
  const none = join(dir, "empty-bin");
  mkdirSync(none, { recursive: true });
  const missing = await serveOpen({ PATH: none, DISPLAY: ":99" });
  assert.match(
    missing,
    /\(could not open a browser: xdg-open is not installed; open http:\/\/\S+ yourself\)/,
  );
});
