/**
 * Reading a diffusers `scheduler_config.json` object: typed getters that apply diffusers' defaults,
 * ignore keys they are not asked about, and reject bad values with an error naming the key, the value
 * and what is allowed. Booleans given as null read as false (diffusers tests them for truth).
 */

export type Json = Record<string, unknown>;

export class ConfigReader {
  constructor(
    readonly json: Json,
    readonly className: string,
  ) {}

  fail(key: string, expected: string): never {
    throw new Error(
      `${this.className} config: "${key}" must be ${expected}, got ${JSON.stringify(this.json[key])}`,
    );
  }

  has(key: string): boolean {
    return this.json[key] !== undefined;
  }

  bool(key: string, fallback: boolean): boolean {
    const v = this.json[key];
    if (v === undefined || v === null) return v === null ? false : fallback;
    if (typeof v !== "boolean") this.fail(key, "true or false");
    return v;
  }

  number(key: string, fallback: number, check?: { min?: number; max?: number; above?: number }): number {
    const v = this.json[key] ?? (this.json[key] === undefined ? fallback : undefined);
    if (typeof v !== "number" || !Number.isFinite(v)) this.fail(key, "a finite number");
    if (check?.min !== undefined && v < check.min) this.fail(key, `a number >= ${check.min}`);
    if (check?.max !== undefined && v > check.max) this.fail(key, `a number <= ${check.max}`);
    if (check?.above !== undefined && !(v > check.above)) this.fail(key, `a number > ${check.above}`);
    return v;
  }

  int(key: string, fallback: number, min = Number.NEGATIVE_INFINITY, max = Number.POSITIVE_INFINITY): number {
    const v = this.number(key, fallback);
    if (!Number.isInteger(v) || v < min || v > max) {
      const range = [min > -Infinity ? ` >= ${min}` : "", max < Infinity ? ` <= ${max}` : ""].filter(Boolean);
      this.fail(key, `an integer${range.join(" and")}`);
    }
    return v;
  }

  nullableNumber(key: string, check?: { above?: number }): number | null {
    if (this.json[key] === undefined || this.json[key] === null) return null;
    return this.number(key, 0, check);
  }

  /** A number that may also be written as "inf", "-inf", "Infinity" or "-Infinity". */
  extendedNumber(key: string, fallback: number): number {
    const v = this.json[key];
    if (v === undefined) return fallback;
    if (typeof v === "number" && !Number.isNaN(v)) return v;
    if (typeof v === "string") {
      const s = v.trim().toLowerCase();
      if (s === "inf" || s === "infinity" || s === "+inf") return Number.POSITIVE_INFINITY;
      if (s === "-inf" || s === "-infinity") return Number.NEGATIVE_INFINITY;
    }
    return this.fail(key, 'a number (or "-inf")');
  }

  oneOf<T extends string>(
    key: string,
    allowed: readonly T[],
    fallback: T,
    aliases: Record<string, T> = {},
  ): T {
    const v = this.json[key] === undefined ? fallback : this.json[key];
    // own keys only: "constructor" or "toString" must not find Object.prototype's
    if (typeof v === "string" && Object.hasOwn(aliases, v)) return aliases[v]!;
    if (typeof v !== "string" || !allowed.includes(v as T)) this.fail(key, `one of ${allowed.join(", ")}`);
    return v as T;
  }

  nullableOneOf<T extends string>(key: string, allowed: readonly T[]): T | null {
    if (this.json[key] === undefined || this.json[key] === null) return null;
    return this.oneOf(key, allowed, allowed[0]!);
  }

  numberArray(key: string): number[] | null {
    const v = this.json[key];
    if (v === undefined || v === null) return null;
    if (!Array.isArray(v) || !v.every((x) => typeof x === "number" && Number.isFinite(x))) {
      this.fail(key, "an array of finite numbers or null");
    }
    return v as number[];
  }
}
