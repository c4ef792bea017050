import assert from "node:assert/strict";
import { test } from "node:test";
import { runInWorker } from "../../src/runtime/worker.ts";

const job = new URL("./worker-job.ts", import.meta.url);

test("a graph run in a worker leaves the main event loop responsive", async () => {
  let ticks = 0;
  const timer = setInterval(() => ticks++, 5);
  const progress: number[] = [];
  const t0 = performance.now();
  const result = await runInWorker<{ runs: number; n: number }, { i: number }, number>(
    job,
    "heavy",
    { runs: 12, n: 384 },
    { onMessage: (m) => progress.push(m.i) },
  );
  const ms = performance.now() - t0;
  clearInterval(timer);
  assert.ok(Math.abs(result - 384) < 0.1, `result ${result}`);
  assert.deepEqual(progress, [...Array(12).keys()]);
  // a blocked loop would tick ~never; a free one ticks about every 5 ms
  assert.ok(ticks > ms / 5 / 4, `${ticks} ticks in ${ms.toFixed(0)} ms`);
});

test("cancellation reaches the job, and errors come back as rejections", async () => {
  const ac = new AbortController();
  const p = runInWorker<{ runs: number; n: number }, { i: number }, number>(
    job,
    "heavy",
    { runs: 10_000, n: 64 },
    {
      signal: ac.signal,
      onMessage: (m) => {
        if (m.i === 3) ac.abort();
      },
    },
  );
  assert.equal(await p, -1);
  await assert.rejects(runInWorker(job, "fails", {}), /job failed on purpose/);
  await assert.rejects(runInWorker(job, "missing", {}), /no exported function missing/);
});

test("sessions in worker threads opened one after another, and on the main thread, share the process's arena", async () => {
  // each worker loads ONNX Runtime's API afresh and finds the shared arena registered already
  for (let k = 0; k < 2; k++) {
    const r = await runInWorker<{ runs: number; n: number }, { i: number }, number>(job, "heavy", {
      runs: 2,
      n: 64,
    });
    assert.ok(Math.abs(r - 64) < 0.01, `worker ${k}: ${r}`);
  }
  const { heavy } = await import("./worker-job.ts");
  const here = await heavy({ runs: 2, n: 64 }, {
    post: () => {},
    signal: new AbortController().signal,
  } as never);
  assert.ok(Math.abs(here - 64) < 0.01, `main thread: ${here}`);
});
