/** Runs `diffuse train`'s loop in this thread on a config; returns the logged (step, loss) pairs. */
import { type TrainEvent, trainRun } from "../../src/train/trainer.ts";

export async function trainLogged(
  config: Record<string, unknown>,
  outDir: string,
): Promise<{ step: number; loss: number }[]> {
  const logs: { step: number; loss: number }[] = [];
  await trainRun(
    { config, outDir },
    {
      post: (e: TrainEvent) => {
        if (e.kind === "log") logs.push({ step: e.step, loss: e.loss });
      },
      signal: new AbortController().signal,
    },
  );
  return logs;
}
