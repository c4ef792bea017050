// Processes that cannot outlive whoever started them (issue 21 items 2 and 3): a relaunched process
// stuck in a computation (its main thread never yields) still ends when its launcher is killed
// outright, and on SIGTERM or Ctrl-C sent to the launcher; a command that follows its parent (`diffuse
// serve`) ends when the parent dies alone, as npm's shell wrapper does under `npm start` — relaunched
// or not; and `diffuse serve` itself, started through a shell that is then killed, stops answering.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { rmSync } from "node:fs";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import { shouldRelaunch } from "../../bin/hugepages.js";
import { type Fixture, makeFixture } from "../web/fixture.ts";

const probe = fileURLToPath(new URL("../support/hugepages-probe.mjs", import.meta.url));
const bin = fileURLToPath(new URL("../../bin/diffuse.js", import.meta.url));
const clean = (extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv => {
  const env = { ...process.env, ...extra };
  delete env["DIFFUSE_RELAUNCHED"];
  delete env["GLIBC_TUNABLES"];
  if (extra["DIFFUSE_HUGEPAGES"] === undefined) delete env["DIFFUSE_HUGEPAGES"];
  return env;
};
const relaunches = shouldRelaunch(clean());
const skipNoRelaunch = relaunches ? false : "nothing is relaunched on this machine";

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Waits until none of `pids` runs (at most `ms`); returns those still running. */
async function gone(pids: number[], ms: number): Promise<number[]> {
  const until = Date.now() + ms;
  while (Date.now() < until && pids.some(alive)) await sleep(25);
  return pids.filter(alive);
}

/** Spawns a command and waits for the first line of the probe (its pid and parent). */
async function startProbe(
  cmd: string,
  args: string[],
  env: NodeJS.ProcessEnv,
): Promise<{
  child: ChildProcess;
  inner: number;
  launcher: number;
  exit: Promise<[number | null, string | null]>;
}> {
  const child = spawn(cmd, args, { env, stdio: ["ignore", "pipe", "inherit"] });
  const exit = new Promise<[number | null, string | null]>((r) => child.on("exit", (c, s) => r([c, s])));
  let text = "";
  child.stdout!.on("data", (d: Buffer) => {
    text += d.toString();
  });
  const until = Date.now() + 20_000;
  while (!text.includes("\n")) {
    if (Date.now() > until) throw new Error("the probe did not start");
    await sleep(20);
  }
  const first = JSON.parse(text.split("\n")[0]!) as { pid: number; ppid: number };
  return { child, inner: first.pid, launcher: first.ppid, exit };
}

test("a relaunched process stuck in a computation ends when its launcher is killed outright", {
  skip: skipNoRelaunch,
}, async () => {
  const p = await startProbe(process.execPath, [probe, "0", "0"], clean({ PROBE_STUCK: "1" }));
  assert.equal(p.launcher, p.child.pid);
  await sleep(300); // stuck by now
  p.child.kill("SIGKILL");
  await p.exit;
  assert.deepEqual(await gone([p.inner], 3000), [], "the stuck process outlived its launcher");
});

for (const sig of ["SIGTERM", "SIGINT"] as const) {
  test(`${sig} to the launcher ends a relaunched process stuck in a computation`, {
    skip: skipNoRelaunch,
  }, async () => {
    const p = await startProbe(process.execPath, [probe, "0", "0"], clean({ PROBE_STUCK: "1" }));
    await sleep(300);
    const t0 = Date.now();
    p.child.kill(sig);
    const [, signal] = await p.exit;
    // it does not answer the launcher's ping (3 s), so the launcher kills it and ends by the signal
    assert.equal(signal, sig);
    assert.ok(Date.now() - t0 < 8000, `took ${Date.now() - t0} ms`);
    assert.deepEqual(await gone([p.inner], 2000), []);
  });
}

for (const hugepages of ["1", "0"]) {
  test(`a process that follows its parent ends when the parent dies alone (relaunch ${hugepages === "1" ? "on" : "off"})`, {
    skip: hugepages === "1" ? skipNoRelaunch : false,
  }, async () => {
    // a shell that stays the parent (it has more to run after the probe), as npm's wrapper does
    const p = await startProbe(
      "sh",
      ["-c", `"${process.execPath}" "${probe}" 0 60000; echo after`],
      clean({ PROBE_FOLLOW_PARENT: "1", PROBE_NO_HANDLERS: "1", DIFFUSE_HUGEPAGES: hugepages }),
    );
    // relaunched: the shell → the launcher → the probe; else the shell → the probe
    const pids = hugepages === "1" ? [p.inner, p.launcher] : [p.inner];
    assert.notEqual(p.inner, p.child.pid, "the probe runs under the shell");
    p.child.kill("SIGKILL"); // the shell alone: nothing reaches its children
    await p.exit;
    assert.deepEqual(await gone(pids, 5000), [], "a process outlived its parent");
  });
}

let fx: Fixture | undefined;
after(() => {
  if (fx) rmSync(fx.root, { recursive: true, force: true });
});

test("diffuse serve under a shell that is killed (npm start's wrapper) stops serving", {
  timeout: 60_000,
}, async () => {
  fx = await makeFixture();
  const sh = spawn(
    "sh",
    ["-c", `"${process.execPath}" "${bin}" serve --model "${fx.modelDir}" --port 0; echo after`],
    { env: clean(), stdio: ["ignore", "pipe", "pipe"], cwd: fx.root },
  );
  const exit = new Promise((r) => sh.on("exit", r));
  let out = "";
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no URL within 30 s:\n${out}`)), 30_000);
    const onData = (b: Buffer) => {
      out += b.toString();
      const m = /diffuse studio on (http:\/\/\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    };
    sh.stdout!.on("data", onData);
    sh.stderr!.on("data", onData);
  });
  assert.equal((await fetch(`${url}api/info`)).status, 200);
  sh.kill("SIGTERM");
  await exit;
  const until = Date.now() + 10_000;
  let answering = true;
  while (answering && Date.now() < until) {
    answering = await fetch(`${url}api/info`, { signal: AbortSignal.timeout(500) }).then(
      () => true,
      () => false,
    );
    if (answering) await sleep(100);
  }
  assert.equal(answering, false, "the studio kept answering after its parent was gone");
});
