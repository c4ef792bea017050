/**
 * `npm run bench -- toy2d`: the diffusion core end to end on 2-D toy data. For each dataset (8
 * Gaussians, two moons, checkerboard) it trains two MLP denoisers with the engine — an ε-model on
 * diffusers' scaled-linear β schedule and a rectified-flow velocity model — then samples with every
 * scheduler through `Scheduler.fromConfig` and scores each sample set by its sliced Wasserstein
 * distance SW₁ to 20 000 held-out points (bench/toy2d-lib.ts), next to the distance of fresh data
 * draws of the same size (the floor a perfect sampler reaches at this sample size, with its spread).
 *
 * Prints a markdown table and writes one scatter plot per dataset (data, then each sampler).
 *
 * options: --steps N (training steps per model, 4000) --batch N (512) --lr X (2e-3) --samples N (4000)
 *          --datasets a,b (all) --out DIR (docs) --threads N (all cores) --seed N (0) --json FILE
 */
import { writeFileSync } from "node:fs";
import { availableParallelism, cpus } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { writePng } from "../src/io/png.ts";
import { Scheduler } from "../src/samplers/index.ts";
import { HostTensor } from "../src/tensor/host.ts";
import { Rng } from "../src/tensor/rng.ts";
import {
  DATASETS,
  type DatasetName,
  DEFAULT_MLP,
  EPS_SCHEDULE,
  meanLoss,
  type Objective,
  SlicedWasserstein,
  sampleDataset,
  ToyNetwork,
  type Trained,
  trainDenoiser,
} from "./toy2d-lib.ts";
import { type Panel, scatterPanels } from "./toy2d-plot.ts";

interface SamplerCase {
  label: string;
  steps: number;
  objective: Objective;
  config: Record<string, unknown>;
}

/** diffusers configs: clip_sample off (it clips x̂0 to [−1, 1]; these data reach ±2.5). */
const EPS = { ...EPS_SCHEDULE, prediction_type: "epsilon", clip_sample: false };
export const SAMPLERS: readonly SamplerCase[] = [
  { label: "DDPM", steps: 1000, objective: "epsilon", config: { _class_name: "DDPMScheduler", ...EPS } },
  { label: "DDIM", steps: 50, objective: "epsilon", config: { _class_name: "DDIMScheduler", ...EPS } },
  {
    label: "DPM-Solver++",
    steps: 20,
    objective: "epsilon",
    config: {
      _class_name: "DPMSolverMultistepScheduler",
      ...EPS,
      algorithm_type: "dpmsolver++",
      solver_order: 2,
    },
  },
  {
    label: "Heun",
    steps: 10,
    objective: "epsilon",
    config: { _class_name: "HeunDiscreteScheduler", ...EPS },
  },
  {
    label: "Euler",
    steps: 20,
    objective: "epsilon",
    config: { _class_name: "EulerDiscreteScheduler", ...EPS },
  },
  {
    label: "flow Euler",
    steps: 20,
    objective: "flow",
    config: { _class_name: "FlowMatchEulerDiscreteScheduler", num_train_timesteps: 1000, shift: 1.0 },
  },
];

/** Held-out points that every sample set is compared with. */
const REFERENCE_POINTS = 20_000;
/** Independent data draws (of the sample size) for the data-vs-data floor and its spread. */
const FLOOR_DRAWS = 20;

interface Options {
  steps: number;
  batch: number;
  lr: number;
  samples: number;
  datasets: DatasetName[];
  out: string;
  threads: number | undefined;
  seed: number;
  json: string | undefined;
}

function parseArgs(args: readonly string[]): Options {
  const o: Options = {
    steps: 4000,
    batch: 512,
    lr: 2e-3,
    samples: 4000,
    datasets: [...DATASETS],
    out: "docs",
    threads: undefined,
    seed: 0,
    json: undefined,
  };
  for (let i = 0; i < args.length; i++) {
    const flag = args[i]!;
    const value = args[++i];
    if (value === undefined) throw new Error(`toy2d: ${flag} needs a value`);
    const num = (): number => {
      const n = Number(value);
      if (!Number.isFinite(n) || n <= 0)
        throw new Error(`toy2d: ${flag} needs a positive number, got "${value}"`);
      return n;
    };
    switch (flag) {
      case "--steps":
        o.steps = num();
        break;
      case "--batch":
        o.batch = num();
        break;
      case "--lr":
        o.lr = num();
        break;
      case "--samples":
        o.samples = num();
        break;
      case "--threads":
        o.threads = num();
        break;
      case "--seed":
        o.seed = Number(value);
        break;
      case "--out":
        o.out = value;
        break;
      case "--json":
        o.json = value;
        break;
      case "--datasets": {
        const names = value.split(",");
        for (const n of names) {
          if (!(DATASETS as readonly string[]).includes(n))
            throw new Error(`toy2d: unknown dataset "${n}"; choose from ${DATASETS.join(", ")}`);
        }
        o.datasets = names as DatasetName[];
        break;
      }
      default:
        throw new Error(`toy2d: unknown option ${flag}`);
    }
  }
  return o;
}

interface DatasetResult {
  dataset: DatasetName;
  floor: number;
  floorStd: number;
  gaussian: number;
  sw: Record<string, number>;
  sampleSeconds: Record<string, number>;
  train: Record<Objective, { seconds: number; firstLoss: number; lastLoss: number }>;
}

const fmt = (x: number): string => x.toFixed(3);

async function runDataset(name: DatasetName, o: Options): Promise<DatasetResult> {
  const root = new Rng(o.seed).fold(name);
  const train = sampleDataset(name, 50_000, root.fold("train"));
  const sw = new SlicedWasserstein(sampleDataset(name, REFERENCE_POINTS, root.fold("held-out")));
  const draws = Array.from({ length: FLOOR_DRAWS }, (_, k) =>
    sampleDataset(name, o.samples, root.fold(`draw-${k}`)),
  );
  const floors = draws.map((d) => sw.to(d));
  const floor = floors.reduce((a, b) => a + b) / FLOOR_DRAWS;
  const floorStd = Math.sqrt(floors.reduce((a, b) => a + (b - floor) ** 2, 0) / (FLOOR_DRAWS - 1));
  const gaussian = sw.to(root.fold("gaussian").normal(2 * o.samples));
  const panels: Panel[] = [{ title: [`${name} data`, `sw ${fmt(floors[0]!)}`], points: draws[0]! }];
  const result: DatasetResult = {
    dataset: name,
    floor,
    floorStd,
    gaussian,
    sw: {},
    sampleSeconds: {},
    train: {} as DatasetResult["train"],
  };

  const models = new Map<Objective, Trained>();
  for (const objective of ["epsilon", "flow"] as const) {
    const t0 = performance.now();
    const m = await trainDenoiser({
      objective,
      data: train,
      steps: o.steps,
      batch: o.batch,
      lr: o.lr,
      seed: o.seed,
      threads: o.threads,
    });
    const seconds = (performance.now() - t0) / 1000;
    const n = m.losses.length;
    const firstLoss = meanLoss(m.losses, 0, Math.min(50, n));
    const lastLoss = meanLoss(m.losses, Math.max(0, n - 200), n);
    result.train[objective] = { seconds, firstLoss, lastLoss };
    console.error(
      `${name}: ${objective} model, ${o.steps} steps in ${seconds.toFixed(1)} s, loss ${firstLoss.toFixed(3)} → ${lastLoss.toFixed(3)}`,
    );
    models.set(objective, m);
  }

  const xT = new HostTensor(root.fold("xT").normal(2 * o.samples), [o.samples, 2]);
  for (const objective of ["epsilon", "flow"] as const) {
    const net = await ToyNetwork.create(models.get(objective)!, o.samples, o.threads);
    try {
      for (const s of SAMPLERS.filter((c) => c.objective === objective)) {
        const t0 = performance.now();
        const x = await Scheduler.fromConfig(s.config).sample(net.forward, xT, {
          steps: s.steps,
          seed: o.seed,
        });
        const key = `${s.label} ${s.steps}`;
        result.sampleSeconds[key] = (performance.now() - t0) / 1000;
        result.sw[key] = sw.to(x.data);
        panels.push({ title: [key, `sw ${fmt(result.sw[key])}`], points: x.data });
        console.error(
          `${name}: ${key}: SW₁ ${fmt(result.sw[key])} (${result.sampleSeconds[key].toFixed(1)} s)`,
        );
      }
    } finally {
      net.dispose();
    }
  }
  writePng(join(o.out, `toy2d-${name}.png`), scatterPanels(panels));
  return result;
}

function table(results: readonly DatasetResult[]): string {
  const keys = SAMPLERS.map((s) => `${s.label} ${s.steps}`);
  const head = ["dataset", "data vs data", ...keys, "N(0, I)"];
  const rows = results.map((r) => [
    r.dataset,
    `${fmt(r.floor)} ± ${fmt(r.floorStd)}`,
    ...keys.map((k) => fmt(r.sw[k] ?? Number.NaN)),
    fmt(r.gaussian),
  ]);
  const line = (cells: readonly string[]): string => `| ${cells.join(" | ")} |`;
  return [line(head), line(head.map((_, i) => (i === 0 ? "---" : "---:"))), ...rows.map(line)].join("\n");
}

export async function main(args: readonly string[]): Promise<void> {
  const o = parseArgs(args);
  const t0 = performance.now();
  console.error(
    `toy2d: MLP ${DEFAULT_MLP.layers}×${DEFAULT_MLP.hidden}, ${o.steps} steps of batch ${o.batch} per model, ` +
      `${o.samples} samples, ${o.threads ?? availableParallelism()} threads, ${cpus()[0]?.model ?? "unknown CPU"}`,
  );
  const results: DatasetResult[] = [];
  for (const name of o.datasets) results.push(await runDataset(name, o));
  const total = (performance.now() - t0) / 1000;
  console.log(
    `\nSW₁ of ${o.samples} points to ${REFERENCE_POINTS} held-out points (lower is better); "data vs data": ` +
      `${o.samples} fresh data points, mean ± std over ${FLOOR_DRAWS} draws (what a perfect sampler scores)\n`,
  );
  console.log(table(results));
  console.log(`\ntotal ${total.toFixed(0)} s`);
  if (o.json)
    writeFileSync(o.json, `${JSON.stringify({ options: o, totalSeconds: total, results }, null, 2)}\n`);
}

// Standalone: `node --import tsx bench/toy2d.ts [options]`.
if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  await main(process.argv.slice(2));
}
