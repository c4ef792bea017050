/**
 * `diffuse serve`: the studio, a local web page to sample models step by step (live x_t and x̂0),
 * keep a gallery of the session's generations, and follow training runs (loss curve, sample grids)
 * as they train. Binds 127.0.0.1 unless told otherwise.
 */
import { spawn } from "node:child_process";
import { formatBytes, formatSeconds, parseBytes } from "../web/job-budget.ts";
import { isLoopback, startStudio } from "../web/server.ts";
import { bool, num, parseFlags, str, UsageError } from "./args.ts";

const HELP = `usage: diffuse serve [--model DIR|NAME ...] [--runs DIR ...] [--host H] [--port P] [--open]

Serves the studio: pick a model, sampler, steps, guidance and seed, and watch the images emerge from
noise step by step; browse this session's generations; follow training runs live.

flags:
  --model DIR|NAME   a model to offer (repeatable): a model folder, a run's folder, or a bundled
                     model (default: the bundled models)
  --runs DIR         a training run (diffuse train --out DIR) or a folder of runs (repeatable;
                     default: ./runs, where diffuse train writes). Their loss curves and grids update live,
                     and each run's exported model joins the model list (a diffuse finetune run's LoRA file
                     is offered with its base model)
  --lora FILE        a LoRA file (diffusers or kohya .safetensors) to offer with every text-to-image model
                     (repeatable); the page picks files and their scales
  --host H           address to listen on (default 127.0.0.1: this machine only)
  --port P           port (default 7860; 0 picks a free one)
  --queue N          generations that may wait behind the running one (default 8)
  --max-job-memory SIZE
                     the most memory one generation may need, e.g. 2G or 512M (default: a quarter
                     of this machine's memory); larger ones are refused before they start, and the
                     studio keeps compiled models within it between generations
  --max-job-time S   the most time one generation may take, in seconds, estimated before it starts
                     (default 900)
  --open             open the page in the default browser
`;

/**
 * Opens the page in the default browser, or says in one line why it could not (no display to show
 * one on, no opener command, or the opener failed).
 */
export function openBrowser(url: string, env: NodeJS.ProcessEnv = process.env): void {
  const cannot = (why: string) => console.log(`(could not open a browser: ${why}; open ${url} yourself)`);
  const [cmd, args] =
    process.platform === "darwin"
      ? ["open", [url]]
      : process.platform === "win32"
        ? ["cmd", ["/c", "start", "", url]]
        : ["xdg-open", [url]];
  if (cmd === "xdg-open" && !env["DISPLAY"] && !env["WAYLAND_DISPLAY"]) {
    cannot("no display here (DISPLAY and WAYLAND_DISPLAY are unset)");
    return;
  }
  try {
    const child = spawn(cmd, args, { stdio: "ignore", detached: true, env });
    child.on("error", (e: NodeJS.ErrnoException) =>
      cannot(e.code === "ENOENT" ? `${cmd} is not installed` : `${cmd}: ${e.message}`),
    );
    child.on("exit", (code) => {
      if (code !== 0 && code !== null) cannot(`${cmd} exited with status ${code}`);
    });
    child.unref();
  } catch (e) {
    cannot((e as Error).message);
  }
}

export async function run(argv: readonly string[]): Promise<void> {
  const p = parseFlags("serve", argv, {
    model: { type: "string", multiple: true },
    runs: { type: "string", multiple: true },
    lora: { type: "string", multiple: true },
    host: { type: "string" },
    port: { type: "string" },
    queue: { type: "string" },
    "max-job-memory": { type: "string" },
    "max-job-time": { type: "string" },
    open: { type: "boolean" },
  });
  if (bool(p, "help")) {
    console.log(HELP);
    return;
  }
  if (p.positionals.length) throw new UsageError(`unexpected argument "${p.positionals[0]}"`);
  const host = str(p, "host") ?? "127.0.0.1";
  const port = num(p, "port", { min: 0, max: 65535, integer: true }) ?? 7860;
  const queueCapacity = num(p, "queue", { min: 0, max: 1000, integer: true }) ?? 8;
  const memoryText = str(p, "max-job-memory");
  let memoryBytes: number | undefined;
  try {
    memoryBytes = memoryText === undefined ? undefined : parseBytes(memoryText, "--max-job-memory");
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const seconds = num(p, "max-job-time", { min: 1, integer: true });
  const budget = {
    ...(memoryBytes !== undefined ? { memoryBytes } : {}),
    ...(seconds !== undefined ? { seconds } : {}),
  };
  const models = (p.values["model"] as string[] | undefined) ?? [];
  const runs = (p.values["runs"] as string[] | undefined) ?? [];
  const loras = (p.values["lora"] as string[] | undefined) ?? [];
  // without --runs, serve ./runs (where diffuse train writes by default), even if it appears later
  const optionalRuns = runs.length ? [] : ["runs"];

  const studio = await startStudio({ models, runs, optionalRuns, loras, host, port, queueCapacity, budget });
  // Ctrl-C handling is in place before the URL is printed: whoever sees the URL may stop the studio
  const stopped = new Promise<void>((resolve) => {
    const stop = () => {
      process.off("SIGINT", stop);
      process.off("SIGTERM", stop);
      console.log("stopping the studio…");
      studio.close().then(resolve, resolve);
    };
    process.on("SIGINT", stop);
    process.on("SIGTERM", stop);
  });
  const served = await studio.catalog.models();
  if (!isLoopback(host)) {
    console.warn(
      `warning: listening on ${host}, so other machines can reach the studio and run jobs on this one; use --host 127.0.0.1 to keep it local`,
    );
  }
  for (const m of studio.catalog.problems()) console.warn(`warning: model ${m.id} is left out: ${m.error}`);
  if (served.length === 0) {
    console.warn(
      "warning: no models to sample: pass --model DIR (a model folder or a training run's folder)",
    );
  }
  const names = served.map((m) => m.id).join(", ") || "none";
  const runCount = studio.catalog.runs().length;
  const { memoryBytes: mem, seconds: secs } = studio.budget;
  console.log(
    `diffuse studio on ${studio.url}  (models: ${names}; runs: ${runCount}; up to ${formatBytes(mem)} and ${formatSeconds(secs)} per generation; Ctrl-C to stop)`,
  );
  if (bool(p, "open")) openBrowser(studio.url);

  await stopped;
}
