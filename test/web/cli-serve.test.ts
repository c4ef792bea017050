import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { rmSync } from "node:fs";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { type Fixture, makeFixture } from "./fixture.ts";

const bin = fileURLToPath(new URL("../../bin/diffuse.js", import.meta.url));
let fx: Fixture;

before(async () => {
  fx = await makeFixture();
});

after(() => rmSync(fx.root, { recursive: true, force: true }));

/** Starts `diffuse serve ARGS` and resolves once it prints its URL. */
function serve(args: string[]): Promise<{ child: ChildProcess; url: string; out: () => string }> {
  const child = spawn(process.execPath, [bin, "serve", ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    cwd: fx.root, // its runs/ is the default --runs
  });
  let out = "";
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no URL within 30 s:\n${out}`)), 30_000);
    const onData = (b: Buffer) => {
      out += b.toString();
      const m = /diffuse studio on (http:\/\/\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ child, url: m[1]!, out: () => out });
      }
    };
    child.stdout!.on("data", onData);
    child.stderr!.on("data", onData);
    child.on("exit", (code) => reject(new Error(`serve exited with ${code}:\n${out}`)));
  });
}

const exited = (child: ChildProcess) =>
  new Promise<number | null>((r) => child.on("exit", (code) => r(code)));

test("diffuse serve prints its URL on loopback, serves the page and stops cleanly on Ctrl-C", {
  timeout: 60_000,
}, async () => {
  const { child, url, out } = await serve(["--model", fx.modelDir, "--runs", fx.runsDir, "--port", "0"]);
  assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
  assert.match(out(), /models: tiny; runs: 1/);
  assert.doesNotMatch(out(), /warning/);
  const page = await fetch(url);
  assert.match(await page.text(), /<title>diffuse studio<\/title>/);
  const info = (await (await fetch(`${url}api/info`)).json()) as { models: { id: string }[] };
  assert.deepEqual(
    info.models.map((m) => m.id),
    ["tiny"],
  );
  const code = exited(child);
  child.kill("SIGINT");
  assert.equal(await code, 0);
});

test("binding beyond loopback prints a warning", { timeout: 60_000 }, async () => {
  const { child, out } = await serve(["--model", fx.modelDir, "--host", "0.0.0.0", "--port", "0"]);
  assert.match(out(), /warning: listening on 0\.0\.0\.0, so other machines can reach the studio/);
  assert.match(out(), /runs: 1/, "without --runs it serves ./runs");
  const code = exited(child);
  child.kill("SIGINT");
  assert.equal(await code, 0);
});

test("bad flags and models fail with a clear message", () => {
  const run = (...args: string[]) =>
    spawnSync(process.execPath, [bin, "serve", ...args], { encoding: "utf8", cwd: fx.root });
  const port = run("--port", "70000");
  assert.equal(port.status, 2);
  assert.match(port.stderr, /--port must be an integer from 0 to 65535, got "70000"/);
  const model = run("--model", "/no/such/model", "--port", "0");
  assert.equal(model.status, 1);
  assert.match(model.stderr, /model "\/no\/such\/model" is neither a folder nor a bundled model/);
  const help = run("--help");
  assert.equal(help.status, 0);
  assert.match(help.stdout, /usage: diffuse serve/);
});
