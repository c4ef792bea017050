/**
 * Running a judge's inference graph over any number of images: the graph is compiled for a fixed
 * batch B, so N images go through in ⌈N/B⌉ runs, the last one zero-padded (its padding rows are
 * computed and dropped). The weights are fed as inputs on every run.
 */
import type { CompiledGraph } from "../runtime/session.ts";
import { HostTensor } from "../tensor/host.ts";
import type { Params } from "../tensor/params.ts";

/**
 * Runs `graph` over the N items of `images` [N, ...item] (row-major float32), fed as `input` in
 * batches of `batchSize`; `onBatch(outputs, at, m)` receives the outputs of items at..at+m−1 (their
 * first m rows; the rest is padding).
 */
export async function runInBatches(
  graph: CompiledGraph,
  params: Params,
  input: string,
  images: HostTensor<"float32">,
  batchSize: number,
  onBatch: (outputs: Record<string, HostTensor>, at: number, m: number) => void,
): Promise<void> {
  const n = images.shape[0]!;
  const item = images.shape.slice(1);
  const per = images.size / Math.max(n, 1);
  const batch = new Float32Array(batchSize * per);
  for (let at = 0; at < n; at += batchSize) {
    const m = Math.min(batchSize, n - at);
    batch.fill(0);
    batch.set(images.data.subarray(at * per, (at + m) * per));
    const feeds: Record<string, HostTensor> = { [input]: new HostTensor(batch, [batchSize, ...item]) };
    for (const [name, t] of params) feeds[name] = t;
    onBatch(await graph.run(feeds), at, m);
  }
}
