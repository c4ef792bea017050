/**
 * Parameter trees: named parameters with PyTorch's dotted state-dict names ("down_blocks.0.resnets.1
 * .conv1.weight"), declared by model code through a `ParamScope` while it is traced, and initialized
 * on the host from a seeded RNG.
 *
 * A model is a function over a scope: `unet(scope, x, t)`. Each `scope.param(...)` becomes a graph
 * input with the parameter's name, so the same traced graph serves for any weights, and a training
 * step can take parameters in and hand updated ones out. A scope made with `ParamScope.frozen(graph,
 * values)` embeds the given values as constants instead: a graph for fixed weights, which ONNX
 * Runtime can pre-pack (e.g. convolution weights in its blocked NCHWc layout).
 */
import { formatShape, HostTensor, sameShape, sizeOf } from "./host.ts";
import type { Rng } from "./rng.ts";
import type { Graph, Tensor } from "./symbolic.ts";

/** How a parameter starts. `uniform(b)` is U(−b, b); PyTorch's default for conv/linear is b = 1/√fan_in. */
export type Init =
  | { kind: "zeros" }
  | { kind: "ones" }
  | { kind: "constant"; value: number }
  | { kind: "uniform"; bound: number }
  | { kind: "normal"; std: number };

export const init = {
  zeros: (): Init => ({ kind: "zeros" }),
  ones: (): Init => ({ kind: "ones" }),
  constant: (value: number): Init => ({ kind: "constant", value }),
  uniform: (bound: number): Init => ({ kind: "uniform", bound }),
  normal: (std = 1): Init => ({ kind: "normal", std }),
  /** PyTorch's nn.Linear / nn.Conv default (kaiming_uniform with a=√5, and the bias rule): U(±1/√fan_in). */
  torchDefault: (fanIn: number): Init => ({ kind: "uniform", bound: 1 / Math.sqrt(fanIn) }),
  /** Glorot & Bengio (2010), nn.init.xavier_uniform_: U(±√(6 / (fan_in + fan_out))). */
  xavierUniform: (fanIn: number, fanOut: number): Init => ({
    kind: "uniform",
    bound: Math.sqrt(6 / (fanIn + fanOut)),
  }),
};

/**
 * A low-rank adapter at one layer (LoRA, Hu et al. 2021): the layer's weight W [out, in] (or a
 * convolution's [out, in, k, k]) is used as W + scale · B·A, with A [rank, in(, k, k)] and
 * B [out, rank(, 1, 1)] named `<layer>.lora_A.<adapter>.weight` / `<layer>.lora_B.<adapter>.weight`
 * (PEFT's names). `scale` is the whole factor: alpha / rank × the user's scale.
 */
export interface LoraSite {
  readonly adapter: string;
  readonly rank: number;
  readonly scale: number;
}

/** Which adapters apply to a layer, by its dotted path ("down_blocks.0.attentions.0.…attn1.to_q") and weight shape. */
export type LoraPlan = (layer: string, weightShape: readonly number[]) => readonly LoraSite[];

export interface ParamSpec {
  readonly name: string;
  readonly shape: readonly number[];
  readonly init: Init;
}

/** Parameters by dotted name, in declaration order. */
export type Params = Map<string, HostTensor<"float32">>;

/** Collects parameters while a model is traced; `sub("conv_in")` prefixes names. */
export class ParamScope {
  private constructor(
    readonly graph: Graph,
    private readonly prefix: string,
    private readonly registry: Map<string, { spec: ParamSpec; tensor: Tensor }>,
    /** Every parameter takes its value from here (a graph for fixed weights). */
    private readonly values?: Params,
    /** These parameters take their value from here; the others are trainable graph inputs. */
    private readonly frozenValues?: Params,
    private readonly frozenRegistry: Map<string, ParamSpec> = new Map(),
    private readonly lora?: LoraPlan,
    /** Frozen parameters are graph inputs fed each run instead of constants (no copy in the model). */
    private readonly frozenFed = false,
  ) {}

  /**
   * A root scope: every parameter is a graph input (trainable), except those given in `frozen`, which
   * are embedded as constants — the frozen base of a fine-tune (LoRA, ControlNet), selected by name
   * with `partitionParams`.
   */
  static root(
    graph: Graph,
    opts: { frozen?: Params; lora?: LoraPlan; frozenFed?: boolean } = {},
  ): ParamScope {
    return new ParamScope(
      graph,
      "",
      new Map(),
      undefined,
      opts.frozen,
      new Map(),
      opts.lora,
      opts.frozenFed ?? false,
    );
  }

  /**
   * A root scope whose parameters are the given values, embedded in the graph as constants (with
   * `lora`, the adapters' A and B are looked up in `values` too).
   */
  static frozen(graph: Graph, values: Params, opts: { lora?: LoraPlan } = {}): ParamScope {
    return new ParamScope(graph, "", new Map(), values, undefined, new Map(), opts.lora);
  }

  /** A scope whose parameter names start with `name.`. */
  sub(name: string | number): ParamScope {
    return new ParamScope(
      this.graph,
      `${this.prefix}${name}.`,
      this.registry,
      this.values,
      this.frozenValues,
      this.frozenRegistry,
      this.lora,
      this.frozenFed,
    );
  }

  /** This scope's dotted path ("" at the root): the layer name adapters are matched against. */
  get path(): string {
    return this.prefix.endsWith(".") ? this.prefix.slice(0, -1) : this.prefix;
  }

  /** The adapters the plan puts on this layer (none without a plan). */
  loraSites(weightShape: readonly number[]): readonly LoraSite[] {
    return this.lora ? this.lora(this.path, weightShape) : [];
  }

  /** The parameter `name` (declared on first use; later uses must agree on the shape). */
  param(name: string, shape: readonly number[], how: Init): Tensor {
    const full = this.prefix + name;
    const seen = this.registry.get(full);
    if (seen) {
      if (!sameShape(seen.spec.shape, shape)) {
        throw new Error(
          `parameter ${full} declared as ${formatShape(seen.spec.shape)} and again as ${formatShape(shape)}`,
        );
      }
      return seen.tensor;
    }
    const frozen = this.frozenValues?.get(full);
    if (frozen) {
      if (!sameShape(frozen.shape, shape))
        throw new Error(
          `frozen parameter ${full} is ${formatShape(shape)}, its value ${formatShape(frozen.shape)}`,
        );
      const tensor = this.frozenFed ? this.graph.input(full, shape, "float32") : this.graph.constant(frozen);
      this.frozenRegistry.set(full, { name: full, shape: [...shape], init: how });
      this.registry.set(full, { spec: { name: full, shape: [...shape], init: how }, tensor });
      return tensor;
    }
    let tensor: Tensor;
    if (this.values) {
      const v = this.values.get(full);
      if (!v) throw new Error(`parameter ${full} ${formatShape(shape)} has no value`);
      if (!sameShape(v.shape, shape))
        throw new Error(`parameter ${full} is ${formatShape(shape)}, its value ${formatShape(v.shape)}`);
      tensor = this.graph.constant(v);
    } else tensor = this.graph.input(full, shape, "float32");
    this.registry.set(full, { spec: { name: full, shape: [...shape], init: how }, tensor });
    return tensor;
  }

  /** Every (trainable) parameter declared so far, in declaration order; frozen ones are not listed. */
  get specs(): ParamSpec[] {
    return [...this.registry.values()]
      .filter((r) => !this.frozenRegistry.has(r.spec.name))
      .map((r) => r.spec);
  }

  /** The graph inputs of the (trainable) parameters, in declaration order. */
  get tensors(): Tensor[] {
    return [...this.registry.values()]
      .filter((r) => !this.frozenRegistry.has(r.spec.name))
      .map((r) => r.tensor);
  }

  /** The frozen parameters used so far (embedded as constants), in declaration order. */
  get frozenSpecs(): ParamSpec[] {
    return [...this.frozenRegistry.values()];
  }
}

/**
 * Splits parameters into trainable and frozen by name: `trainable` is a predicate, a name prefix, or a
 * regular expression (e.g. /\.lora_/ for LoRA adapters, "controlnet." for a ControlNet beside a frozen U-Net).
 */
export function partitionParams(
  params: Params,
  trainable: ((name: string) => boolean) | string | RegExp,
): { trainable: Params; frozen: Params } {
  const pick =
    typeof trainable === "function"
      ? trainable
      : typeof trainable === "string"
        ? (n: string) => n.startsWith(trainable)
        : (n: string) => trainable.test(n);
  const out = { trainable: new Map(), frozen: new Map() } as { trainable: Params; frozen: Params };
  for (const [k, v] of params) (pick(k) ? out.trainable : out.frozen).set(k, v);
  return out;
}

/** Draws initial values. Each parameter uses its own stream `rng.fold(name)`, so adding one leaves the others. */
export function initParams(specs: readonly ParamSpec[], rng: Rng): Params {
  const out: Params = new Map();
  for (const s of specs) {
    const n = sizeOf(s.shape);
    const r = rng.fold(s.name);
    let data: Float32Array;
    switch (s.init.kind) {
      case "zeros":
        data = new Float32Array(n);
        break;
      case "ones":
        data = new Float32Array(n).fill(1);
        break;
      case "constant":
        data = new Float32Array(n).fill(s.init.value);
        break;
      case "uniform":
        data = r.uniform(n, -s.init.bound, s.init.bound);
        break;
      case "normal":
        data = r.normal(n, 0, s.init.std);
        break;
    }
    out.set(s.name, new HostTensor(data, s.shape));
  }
  return out;
}

/** Total number of scalars. */
export function countParams(p: Params | readonly ParamSpec[]): number {
  let n = 0;
  for (const v of p instanceof Map ? p.values() : p) n += sizeOf(v.shape);
  return n;
}

/** Checks that `params` has exactly the declared names and shapes; the message names the first mismatch. */
export function checkParams(specs: readonly ParamSpec[], params: Params, where = "parameters"): void {
  for (const s of specs) {
    const p = params.get(s.name);
    if (!p) throw new Error(`${where}: missing "${s.name}" ${formatShape(s.shape)}`);
    if (!sameShape(p.shape, s.shape)) {
      throw new Error(
        `${where}: "${s.name}" has shape ${formatShape(p.shape)}, the model needs ${formatShape(s.shape)}`,
      );
    }
  }
  const names = new Set(specs.map((s) => s.name));
  for (const k of params.keys()) {
    if (!names.has(k)) throw new Error(`${where}: unexpected parameter "${k}" (not part of this model)`);
  }
}
