// The fault harness's short version (npm run bench -- faults --quick, about a minute): a training run
// killed and resumed, a fuzzer pass over every target, a short load on the studio — nothing may fail.
// The full harness (≥ 20 kills, ≥ 10,000 inputs per target, 5 minutes of load) is a benchmark:
// docs/benchmarks.md, "Reliability".
import assert from "node:assert/strict";
import { test } from "node:test";
import { formatFaults, QUICK, runFaults } from "../../bench/faults.ts";

test("fault harness, short: kills and resumes, fuzzed readers, the studio under load", {
  timeout: 240_000,
}, async () => {
  const r = await runFaults(QUICK);
  console.log(
    formatFaults(r)
      .split("\n")
      .map((l) => `# ${l}`)
      .join("\n"),
  );
  assert.deepEqual(r.failures, []);
  assert.equal(r.kill?.kills, QUICK.kills);
  assert.ok(r.fuzz?.every((t) => t.inputs === QUICK.inputs && t.crashes + t.hangs + t.bigAllocations === 0));
  assert.ok((r.load?.requests ?? 0) > 0 && (r.load?.done ?? 0) > 0);
});
