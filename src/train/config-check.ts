/**
 * The checks every section of a run config shares: an object of known fields over its defaults, and a
 * field that must be one thing (the message names the field, what it must be and what it was).
 */
export class ConfigFieldError extends Error {
  override name = "ConfigFieldError";
}

export type Json = Record<string, unknown>;

export function isObj(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

export function section<T extends object>(name: string, given: unknown, defaults: T): T {
  if (given === undefined) return { ...defaults };
  if (!isObj(given)) throw new ConfigFieldError(`config field "${name}" must be an object`);
  for (const k of Object.keys(given)) {
    if (!Object.hasOwn(defaults, k)) {
      throw new ConfigFieldError(
        `unknown config field "${name}.${k}"; known fields: ${Object.keys(defaults).join(", ")}`,
      );
    }
  }
  return { ...defaults, ...(given as Partial<T>) };
}

export function check(cond: boolean, field: string, want: string, got: unknown): void {
  if (!cond)
    throw new ConfigFieldError(`config field "${field}" must be ${want}, got ${JSON.stringify(got)}`);
}

export const isInt = (v: unknown, min: number): boolean =>
  typeof v === "number" && Number.isInteger(v) && v >= min;
export const isNum = (v: unknown, lo: number, hi: number): boolean =>
  typeof v === "number" && Number.isFinite(v) && v >= lo && v <= hi;
