/** Command-line flag parsing on node:util's parseArgs, with errors that name the flag and the fix. */
import { parseArgs } from "node:util";

export class UsageError extends Error {
  override name = "UsageError";
}

export type FlagSpec = Record<string, { type: "string" | "boolean"; short?: string; multiple?: boolean }>;

export interface Parsed {
  values: Record<string, string | boolean | string[] | boolean[] | undefined>;
  positionals: string[];
}

/**
 * "--steps -5": a negative number after a flag that takes a value is that value (node's parseArgs
 * calls it ambiguous); joined as "--steps=-5" so the flag's own check can say what is allowed.
 */
function joinNegativeValues(argv: readonly string[], flags: FlagSpec): string[] {
  const takesValue = (arg: string): boolean => {
    const spec = arg.startsWith("--")
      ? flags[arg.slice(2)]
      : Object.values(flags).find((f) => f.short !== undefined && arg === `-${f.short}`);
    return spec?.type === "string";
  };
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const next = argv[i + 1];
    if (next !== undefined && /^-(\d|\.\d)/.test(next) && !arg.includes("=") && takesValue(arg)) {
      out.push(`${arg}=${next}`);
      i++;
    } else out.push(arg);
  }
  return out;
}

/** parseArgs' error as one line that names the flag and the fix. */
function flagProblem(e: NodeJS.ErrnoException): string {
  const flag = /'(--?[\w-]+)/.exec(e.message)?.[1] ?? "a flag";
  if (e.code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") return `unknown flag ${flag}`;
  if (e.code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE") {
    if (/does not take an argument/.test(e.message)) return `${flag} takes no value`;
    if (/ambiguous/.test(e.message))
      return `${flag} needs a value; to pass one that starts with "-", write ${flag}=VALUE`;
    return `${flag} needs a value`;
  }
  return e.message.split("\n")[0]!.replace(/\.$/, "");
}

/** Parses argv against the flag table; a bad flag is one UsageError line naming it and the command's --help. */
export function parseFlags(command: string, argv: readonly string[], flags: FlagSpec): Parsed {
  try {
    const r = parseArgs({
      args: joinNegativeValues(argv, flags),
      options: { ...flags, help: { type: "boolean", short: "h" } },
      allowPositionals: true,
      strict: true,
    });
    return { values: r.values as Parsed["values"], positionals: r.positionals };
  } catch (e) {
    throw new UsageError(
      `${flagProblem(e as NodeJS.ErrnoException)}; run "diffuse ${command} --help" for the flags it takes`,
    );
  }
}

export function str(p: Parsed, name: string): string | undefined {
  const v = p.values[name];
  return typeof v === "string" ? v : undefined;
}

export function bool(p: Parsed, name: string): boolean {
  return p.values[name] === true;
}

/** A number flag within [min, max] (integers when `integer`). */
export function num(
  p: Parsed,
  name: string,
  o: { min?: number; max?: number; integer?: boolean } = {},
): number | undefined {
  const s = str(p, name);
  if (s === undefined) return undefined;
  const v = Number(s);
  const kind = o.integer ? "an integer" : "a number";
  const range =
    o.min !== undefined && o.max !== undefined
      ? ` from ${o.min} to ${o.max}`
      : o.min !== undefined
        ? ` ≥ ${o.min}`
        : "";
  if (
    s.trim() === "" ||
    !Number.isFinite(v) ||
    (o.integer && !Number.isInteger(v)) ||
    (o.min !== undefined && v < o.min) ||
    (o.max !== undefined && v > o.max)
  ) {
    throw new UsageError(`--${name} must be ${kind}${range}, got "${s}"`);
  }
  return v;
}
