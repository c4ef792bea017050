import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { shouldRelaunch } from "../../bin/hugepages.js";
import { withYoungGenerationCap, YOUNG_GENERATION_OPTION } from "../../bin/young-generation.js";

const probe = fileURLToPath(new URL("../support/hugepages-probe.mjs", import.meta.url));
const clean = (): NodeJS.ProcessEnv => {
  const env = { ...process.env };
  delete env["DIFFUSE_RELAUNCHED"];
  delete env["DIFFUSE_HUGEPAGES"];
  delete env["GLIBC_TUNABLES"];
  return env;
};
// on Linux with glibc and transparent huge pages available (this machine and CI); elsewhere the
// tests below check that nothing is relaunched
const relaunches = shouldRelaunch(clean());

test("shouldRelaunch steps aside when turned off, already relaunched, the tunable is set, or a debugger is asked for", () => {
  assert.equal(shouldRelaunch({ ...clean(), DIFFUSE_HUGEPAGES: "0" }), false);
  assert.equal(shouldRelaunch({ ...clean(), DIFFUSE_RELAUNCHED: "1" }), false);
  assert.equal(shouldRelaunch({ ...clean(), GLIBC_TUNABLES: "glibc.malloc.hugetlb=0" }), false);
  assert.equal(shouldRelaunch({ ...clean(), NODE_OPTIONS: "--inspect=0" }), false);
  if (process.platform !== "linux") assert.equal(relaunches, false);
});

test("the relaunched process has the tunable (kept with the user's own) and the exit code comes back", () => {
  const r = spawnSync(process.execPath, [probe, "3"], {
    encoding: "utf8",
    env: { ...clean(), GLIBC_TUNABLES: "glibc.malloc.arena_max=2" },
  });
  assert.equal(r.status, 3, r.stderr);
  const info = JSON.parse(r.stdout.split("\n")[0]!) as {
    tunables: string;
    nodeOptions: string | null;
    relaunched: boolean;
  };
  assert.equal(info.relaunched, relaunches);
  // the relaunched process (and whatever it starts) has V8's young generation capped
  assert.equal(info.nodeOptions?.includes(YOUNG_GENERATION_OPTION) ?? false, relaunches);
  assert.equal(
    info.tunables,
    relaunches ? "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1" : "glibc.malloc.arena_max=2",
  );
  const off = spawnSync(process.execPath, [probe], {
    encoding: "utf8",
    env: { ...clean(), DIFFUSE_HUGEPAGES: "0" },
  });
  assert.deepEqual(JSON.parse(off.stdout.split("\n")[0]!), {
    pid: off.pid,
    ppid: process.pid,
    tunables: null,
    nodeOptions: clean()["NODE_OPTIONS"] ?? null,
    relaunched: false,
  });
});

test("the young generation cap joins NODE_OPTIONS unless the flags or NODE_OPTIONS size it already", () => {
  assert.equal(withYoungGenerationCap("", []), YOUNG_GENERATION_OPTION);
  assert.equal(withYoungGenerationCap(undefined, []), YOUNG_GENERATION_OPTION);
  assert.equal(
    withYoungGenerationCap(" --max-old-space-size=4096 ", []),
    `--max-old-space-size=4096 ${YOUNG_GENERATION_OPTION}`,
  );
  assert.equal(withYoungGenerationCap("--max-semi-space-size=8", []), "--max-semi-space-size=8");
  assert.equal(withYoungGenerationCap("--max_semi_space_size=8", []), "--max_semi_space_size=8");
  assert.equal(withYoungGenerationCap("", ["--max-semi-space-size=64"]), "");
  assert.equal(
    withYoungGenerationCap("--no-warnings", ["--import", "tsx"]),
    `--no-warnings ${YOUNG_GENERATION_OPTION}`,
  );
});

/** Starts the probe (ending after `waitMs`) and waits for its first line: the inner process's pid. */
async function started(waitMs: number) {
  const child = spawn(process.execPath, [probe, "0", `${waitMs}`], { env: clean() });
  const out = { text: "" };
  child.stdout.on("data", (d: Buffer) => {
    out.text += d.toString();
  });
  const exited = new Promise<number | null>((r) => child.on("exit", (c) => r(c)));
  while (!out.text.includes("\n")) await new Promise((r) => setTimeout(r, 20));
  const inner = (JSON.parse(out.text.split("\n")[0]!) as { pid: number }).pid;
  return { child, out, exited, inner };
}

for (const sig of ["SIGINT", "SIGTERM"] as const) {
  test(`${sig} sent to the launching process reaches the relaunched one exactly once`, async () => {
    const { child, out, exited } = await started(1500);
    child.kill(sig);
    assert.equal(await exited, 0);
    const lines = out.text.trim().split("\n");
    assert.deepEqual(JSON.parse(lines.at(-1)!), { signals: [sig] });
  });
}

test("a launcher killed outright takes the relaunched process with it", { skip: !relaunches }, async () => {
  const { child, exited, inner } = await started(20000);
  assert.notEqual(inner, child.pid);
  child.kill("SIGKILL");
  await exited;
  const alive = () => {
    try {
      process.kill(inner, 0);
      return true;
    } catch {
      return false;
    }
  };
  for (let i = 0; i < 100 && alive(); i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(alive(), false, "the relaunched process outlived its launcher");
});

test("stopping the launcher (Ctrl-Z) stops the relaunched process; continuing continues it", {
  skip: !relaunches,
}, async () => {
  const { child, exited, inner } = await started(400);
  const state = async (pid: number) => {
    const { readFileSync } = await import("node:fs");
    return readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.charAt(0);
  };
  child.kill("SIGTSTP");
  let s = await state(inner);
  for (let i = 0; i < 50 && s !== "T"; i++) {
    await new Promise((r) => setTimeout(r, 20));
    s = await state(inner);
  }
  assert.equal(s, "T", "the relaunched process is stopped");
  await new Promise((r) => setTimeout(r, 600)); // longer than its 400 ms timer: it must not have ended
  assert.equal(await state(inner), "T");
  child.kill("SIGCONT");
  assert.equal(await exited, 0);
});
