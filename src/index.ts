/** diffuse: diffusion models in TypeScript. Public API (re-exports only). */
export { type DType, HostTensor, sizeOf } from "./tensor/host.ts";
export { Rng } from "./tensor/rng.ts";
