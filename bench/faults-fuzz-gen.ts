/**
 * Input generation for the fault harness's fuzzer (faults-fuzz.ts): hostile JSON values and mutations
 * of valid seeds, all drawn from a seeded Rng, so input i of a target is the same on every run (a
 * failure is reproduced by its index). Objects may carry own "__proto__", "constructor" and
 * "prototype" keys, as JSON.parse makes them from a file.
 */
import type { Rng } from "../src/tensor/rng.ts";

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** An integer in [0, n). */
export const pick = (rng: Rng, n: number): number => Math.min(n - 1, Math.floor(rng.nextUniform() * n));
export const choose = <T>(rng: Rng, xs: readonly T[]): T => xs[pick(rng, xs.length)]!;

const NUMBERS = [
  0,
  -0,
  1,
  -1,
  2,
  3,
  7,
  8,
  16,
  32,
  64,
  77,
  128,
  255,
  256,
  1000,
  4096,
  65535,
  2 ** 31 - 1,
  2 ** 31,
  2 ** 32,
  2 ** 53,
  2 ** 53 + 2,
  1e9,
  1e15,
  1e21,
  1e300,
  1.7976931348623157e308,
  -1e9,
  -(2 ** 31),
  0.5,
  1e-7,
  1e-320,
  0.1,
  3.5,
  -0.5,
  1e6,
  999999,
];
const STRINGS = [
  "",
  " ",
  "a",
  "0",
  "-1",
  "1e6",
  "NaN",
  "Infinity",
  "true",
  "null",
  "[]",
  "{}",
  "__proto__",
  "constructor",
  "prototype",
  "toString",
  "../../etc/passwd",
  "/etc/passwd",
  "C:\\Windows",
  "\u0000",
  "\ud800",
  "é🙂",
  "\n\r\t",
  "%s%n",
  "$" + "{x}", // a template placeholder, as text
  "<script>",
  "UNet2DModel",
  "DDIMScheduler",
  "F16",
  "F32",
  "BF16",
  "I64",
  "linear",
  "epsilon",
  "all",
  "ddim",
  "dpm++2m",
];
const KEYS = ["__proto__", "constructor", "prototype", "toString", "valueOf", "hasOwnProperty", "x", "", "0"];

/** Sets an own enumerable property (even "__proto__", which `o[k] = v` would not). */
export function setOwn(o: { [k: string]: Json }, k: string, v: Json): void {
  Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
}

/** A random JSON value, nesting at most `depth` more levels. */
export function randomValue(rng: Rng, depth = 2): Json {
  const r = pick(rng, 10);
  if (r === 0) return null;
  if (r === 1) return rng.nextUniform() < 0.5;
  if (r <= 3)
    return rng.nextUniform() < 0.7 ? choose(rng, NUMBERS) : (rng.nextUniform() - 0.5) * 10 ** pick(rng, 12);
  if (r <= 5) {
    if (rng.nextUniform() < 0.05) return "x".repeat(1 + pick(rng, 100_000));
    return rng.nextUniform() < 0.8
      ? choose(rng, STRINGS)
      : String.fromCharCode(...Array.from({ length: pick(rng, 12) }, () => pick(rng, 0x2fff)));
  }
  if (depth <= 0) return choose(rng, NUMBERS);
  if (r <= 7) {
    const n = rng.nextUniform() < 0.03 ? 10_000 + pick(rng, 90_000) : pick(rng, 6);
    return Array.from({ length: n }, () => (n > 100 ? choose(rng, NUMBERS) : randomValue(rng, depth - 1)));
  }
  const o: { [k: string]: Json } = {};
  for (let k = pick(rng, 4); k > 0; k--) setOwn(o, choose(rng, KEYS), randomValue(rng, depth - 1));
  return o;
}

/** A deep copy through JSON (own "__proto__" keys kept as own keys). */
export const clone = <T extends Json>(v: T): T => JSON.parse(JSON.stringify(v)) as T;

/** The paths of every value inside `v` (object keys and array indices). */
function paths(
  v: Json,
  at: (string | number)[] = [],
  out: (string | number)[][] = [],
): (string | number)[][] {
  out.push(at);
  if (Array.isArray(v)) {
    if (v.length <= 64) for (const [i, x] of v.entries()) paths(x, [...at, i], out);
  } else if (v && typeof v === "object") for (const k of Object.keys(v)) paths(v[k]!, [...at, k], out);
  return out;
}

function numberNear(rng: Rng, x: number): number {
  switch (pick(rng, 7)) {
    case 0:
      return -x;
    case 1:
      return x * 2 ** (1 + pick(rng, 30));
    case 2:
      return x + 0.5;
    case 3:
      return 0;
    case 4:
      return x - 1;
    case 5:
      return Math.floor(x / 2);
    default:
      return choose(rng, NUMBERS);
  }
}

/** 1–4 edits of a copy of `seed`: values replaced (by hostile or nearby ones), keys deleted or added. */
export function mutate(rng: Rng, seed: Json): Json {
  let root = clone(seed);
  for (let e = 1 + pick(rng, 4); e > 0; e--) {
    const all = paths(root);
    const path = choose(rng, all);
    const parentPath = path.slice(0, -1);
    let parent: Json = root;
    for (const p of parentPath) parent = (parent as Record<string | number, Json>)[p]!;
    const key = path[path.length - 1];
    const current = path.length === 0 ? root : (parent as Record<string | number, Json>)[key!]!;
    const op = pick(rng, 6);
    let next: Json | undefined;
    if (op === 0 && typeof current === "number") next = numberNear(rng, current);
    else if (op === 1 && Array.isArray(current)) {
      next =
        rng.nextUniform() < 0.5 ? current.slice(0, pick(rng, current.length + 1)) : [...current, ...current];
    } else if (op === 2 && current && typeof current === "object" && !Array.isArray(current)) {
      setOwn(
        current,
        rng.nextUniform() < 0.5 ? choose(rng, KEYS) : `extra_${pick(rng, 100)}`,
        randomValue(rng),
      );
      continue;
    } else if (op === 3 && path.length > 0 && !Array.isArray(parent)) {
      delete (parent as Record<string, Json>)[key as string];
      continue;
    } else next = randomValue(rng);
    if (path.length === 0) root = next;
    else if (Array.isArray(parent)) parent[key as number] = next;
    else setOwn(parent as { [k: string]: Json }, key as string, next);
  }
  return root;
}
