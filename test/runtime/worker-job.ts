/** A job for the worker tests: runs a heavy graph a few times and reports progress. */
import { compile } from "../../src/runtime/compile.ts";
import type { WorkerContext } from "../../src/runtime/worker.ts";
import { HostTensor } from "../../src/tensor/host.ts";
import * as o from "../../src/tensor/ops.ts";

export async function heavy(
  args: { runs: number; n: number },
  ctx: WorkerContext<{ i: number }>,
): Promise<number> {
  const g = await compile({ a: { shape: [args.n, args.n] } }, ({ a }) => ({
    y: o.sum(o.matmul(o.matmul(a, a), a)),
  }));
  const a = HostTensor.full([args.n, args.n], 1 / args.n);
  let last = 0;
  for (let i = 0; i < args.runs; i++) {
    if (ctx.signal.aborted) return -1;
    last = (await g.run({ a }))["y"]!.data[0] as number;
    ctx.post({ i });
  }
  return last;
}

export function fails(): never {
  throw new Error("job failed on purpose");
}
