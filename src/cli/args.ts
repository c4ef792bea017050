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

/** Parses argv against the flag table; unknown flags are a UsageError naming the command's --help. */
export function parseFlags(command: string, argv: readonly string[], flags: FlagSpec): Parsed {
  try {
    const r = parseArgs({
      args: [...argv],
      options: { ...flags, help: { type: "boolean", short: "h" } },
      allowPositionals: true,
      strict: true,
    });
    return { values: r.values as Parsed["values"], positionals: r.positionals };
  } catch (e) {
    throw new UsageError(
      `${(e as Error).message.replace(/\. To specify.*$/s, "")}\nRun "diffuse ${command} --help" for the flags it takes.`,
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
