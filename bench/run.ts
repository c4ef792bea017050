/**
 * `npm run bench -- <name> [args…]`: runs the benchmark bench/<name>.ts. Each benchmark module
 * exports `main(args)`; add a new one as one row of the table below.
 */
import { withHugePages } from "../bin/hugepages.js";

// the same process setup as the CLI (huge pages for malloc: bin/hugepages.js), so the figures are what users get
await withHugePages();

const BENCHMARKS: Readonly<Record<string, { file: string; what: string }>> = {
  engine: { file: "./engine.ts", what: "conv / matmul / attention / group norm vs PyTorch eager" },
  "conv-grad": { file: "./conv-grad.ts", what: "each convolution-gradient strategy per U-Net shape" },
  mnist: { file: "./mnist.ts", what: "MNIST U-Net train step, CFG sampling and peak RSS vs PyTorch" },
  dit: {
    file: "./dit.ts",
    what: "DiT (DiT-S width, 32×32) train step, CFG sampling and peak RSS vs diffusers",
  },
  latent: {
    file: "./latent.ts",
    what: "text-conditioned U-Net (emoji latents) train step, CFG sampling, pipeline and peak RSS vs diffusers",
  },
  lora: {
    file: "./lora.ts",
    what: "emoji U-Net fine-tuning step: LoRA rank 4 vs all weights (speed, peak RSS)",
  },
  mmdit: {
    file: "./mmdit.ts",
    what: "SD3 MM-DiT (emoji latents, 77 text tokens) train step, 28-step CFG sampling and peak RSS vs diffusers",
  },
  steps: {
    file: "./steps.ts",
    what: "MNIST teachers and few-step students: accuracy, FD and time per image at 1–50 steps (table + PNG plot)",
  },
  gpu: { file: "./gpu.ts", what: "MNIST U-Net on a GPU provider (WebGPU/CUDA) vs the CPU and PyTorch CUDA" },
  toy2d: { file: "./toy2d.ts", what: "2-D toy data: each sampler's sliced Wasserstein to the data" },
  faults: {
    file: "./faults.ts",
    what: "fault harness: kills and resumes of a training run, a fuzzer over the readers, the studio under load",
  },
};

interface BenchModule {
  main(args: readonly string[]): Promise<void>;
}

function usage(): string {
  const rows = Object.entries(BENCHMARKS).map(([name, b]) => `  ${name.padEnd(12)} ${b.what}`);
  return `usage: npm run bench -- <name> [options]\nbenchmarks:\n${rows.join("\n")}`;
}

const [name, ...args] = process.argv.slice(2);
if (name === undefined || name === "--help" || name === "-h") {
  console.log(usage());
  process.exit(name === undefined ? 1 : 0);
}
const entry = BENCHMARKS[name];
if (!entry) {
  console.error(`unknown benchmark "${name}"\n${usage()}`);
  process.exit(1);
}
const mod = (await import(entry.file)) as BenchModule;
await mod.main(args);
