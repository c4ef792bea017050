/**
 * The `diffuse` command: a table of subcommands, each in its own file with a `run(argv)` that
 * throws UsageError for bad flags. Errors print one clear line (no stack) and exit with status 2
 * (usage) or 1 (anything else).
 */
import { UsageError } from "./args.ts";

interface Command {
  summary: string;
  load: () => Promise<{ run(argv: readonly string[]): Promise<void> }>;
}

const commands: Record<string, Command> = {
  train: { summary: "train a diffusion model from a JSON config", load: () => import("./train.ts") },
  distill: {
    summary: "distil a teacher into a few-step student (--method lcm)",
    load: () => import("./distill.ts"),
  },
  finetune: {
    summary: "adapt a text-to-image model to your images (LoRA, DreamBooth)",
    load: () => import("./finetune.ts"),
  },
  sample: { summary: "generate images with a model and a sampler", load: () => import("./sample.ts") },
  eval: {
    summary: "score MNIST samples: accuracy, confidence, Fréchet distance",
    load: () => import("./eval.ts"),
  },
  serve: { summary: "open the studio (live sampling, training runs)", load: () => import("./serve.ts") },
};

function usage(): string {
  const width = Math.max(...Object.keys(commands).map((k) => k.length));
  const lines = Object.entries(commands).map(([k, c]) => `  ${k.padEnd(width)}  ${c.summary}`);
  return `usage: diffuse <command> [flags]\n\ncommands:\n${lines.join("\n")}\n\nRun "diffuse <command> --help" for a command's flags.`;
}

export async function main(argv: readonly string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === "--help" || name === "-h" || name === "help") {
    console.log(usage());
    return 0;
  }
  const cmd = commands[name];
  if (!cmd) {
    console.error(`diffuse: unknown command "${name}"\n\n${usage()}`);
    return 2;
  }
  try {
    const mod = await cmd.load();
    await mod.run(rest);
    return 0;
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`diffuse ${name}: ${e.message}`);
      return 2;
    }
    const err = e as Error;
    console.error(`diffuse ${name}: ${err.message}`);
    if (process.env["DIFFUSE_DEBUG"]) console.error(err.stack);
    return 1;
  }
}
