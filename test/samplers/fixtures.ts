// Loads the diffusers scheduler reference vectors (test/fixtures/diffusers-schedulers, see its README).
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { HostTensor } from "../../src/tensor/host.ts";

const dir = fileURLToPath(new URL("../fixtures/diffusers-schedulers/", import.meta.url));

export function fixture<T = unknown>(name: string): T {
  return JSON.parse(readFileSync(dir + name, "utf8")) as T;
}

export interface ArrayJson {
  shape: number[];
  dtype: string;
  data: number[];
}

export function tensorOf(a: ArrayJson): HostTensor<"float32"> {
  return new HostTensor(Float32Array.from(a.data), a.shape);
}

/** max|a − b| / max|ref|. */
export function relError(a: ArrayLike<number>, ref: ArrayLike<number>): number {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < ref.length; i++) {
    diff = Math.max(diff, Math.abs(a[i]! - ref[i]!));
    scale = Math.max(scale, Math.abs(ref[i]!));
  }
  return scale === 0 ? diff : diff / scale;
}

/** The loops' model: float32(0.5·x·cos(t/1000) + 0.1·sin(x)), in float64, rounded once. */
export function referenceModel(x: HostTensor, t: number): HostTensor<"float32"> {
  const data = x.data as Float32Array;
  const c = Math.cos(t / 1000.0);
  return new HostTensor(
    data.map((v) => 0.5 * v * c + 0.1 * Math.sin(v)),
    x.shape,
  );
}
