/**
 * The LoRA adapters loaded into one model object (a U-Net, a text encoder): several at once, each
 * with its own scale, applied unfused (the traced graph adds s·B·A to each adapted weight, nn/lora.ts)
 * or fused into the model's weights and unfused again, as diffusers' `set_adapters`, `fuse_lora` and
 * `unfuse_lora` do. Unfusing restores the exact original weights (kept, not subtracted back).
 *
 * Model classes hold one `LoraAdapters` over their `params` and ask it, when they trace a graph, for
 * the plan and the adapter values (`snapshot()`); `version` changes whenever what a graph would embed
 * changes, so that they compile again.
 */
import { loraDelta, loraNames } from "../../nn/lora.ts";
import { formatShape, HostTensor, sameShape } from "../../tensor/host.ts";
import type { LoraPlan, LoraSite, Params } from "../../tensor/params.ts";

/** One layer's adapter: A [r, in(, k, k)], B [out, r(, 1, 1)] and alpha (scale = alpha / r × the adapter's scale). */
export interface LoraLayer {
  readonly a: HostTensor<"float32">;
  readonly b: HostTensor<"float32">;
  readonly alpha: number;
}

export interface Adapter {
  readonly name: string;
  /** Layers by dotted path (the module path in diffusers' / transformers' names). */
  readonly layers: ReadonlyMap<string, LoraLayer>;
  /** The user's scale (diffusers' lora_scale / adapter weight), multiplying alpha / rank. */
  scale: number;
}

/** What a traced graph embeds: the plan and the adapter tensors by their in-model names. */
export interface LoraSnapshot {
  readonly plan: LoraPlan | undefined;
  readonly values: Params;
}

export class LoraAdapters {
  private readonly adapters = new Map<string, Adapter>();
  /** Original weights of the layers whose adapters are fused, by weight name. */
  private readonly fusedOriginals = new Map<string, HostTensor<"float32">>();
  private fusedNames: string[] = [];
  /** Changes whenever the adapters a graph would embed change. */
  version = 0;

  constructor(
    /** The model's weights (shared: fusing replaces values in it). */
    private readonly params: Params,
    private readonly owner: string,
  ) {}

  /** Adapter names, in the order they were added. */
  get names(): string[] {
    return [...this.adapters.keys()];
  }

  get(name: string): Adapter | undefined {
    return this.adapters.get(name);
  }

  /** Whether any adapter is fused into the weights. */
  get fused(): boolean {
    return this.fusedNames.length > 0;
  }

  /**
   * Adds an adapter (checked: every layer must be a linear or convolution weight of this model whose
   * shape agrees with A and B). Replacing an existing name requires it to be unfused.
   */
  add(name: string, layers: ReadonlyMap<string, LoraLayer>, scale = 1): Adapter {
    checkScale(scale);
    if (!name) throw new Error(`${this.owner}: an adapter needs a name`);
    if (this.fusedNames.includes(name))
      throw new Error(
        `${this.owner}: adapter "${name}" is fused; unfuse it (unfuseLora) before replacing it`,
      );
    const fitted = new Map<string, LoraLayer>();
    for (const [layer, l] of layers) {
      const f = this.fit(layer, l);
      this.checkLayer(name, layer, f);
      fitted.set(layer, f);
    }
    const adapter: Adapter = { name, layers: fitted, scale };
    this.adapters.set(name, adapter);
    this.version++;
    return adapter;
  }

  /** Sets adapters' scales (diffusers' set_adapters weights); 0 turns one off. */
  setScale(name: string, scale: number): void {
    checkScale(scale);
    const a = this.need(name);
    if (this.fusedNames.includes(name))
      throw new Error(`${this.owner}: adapter "${name}" is fused; unfuse it before changing its scale`);
    a.scale = scale;
    this.version++;
  }

  /** Removes an adapter (unfused ones only). */
  remove(name: string): void {
    this.need(name);
    if (this.fusedNames.includes(name))
      throw new Error(`${this.owner}: adapter "${name}" is fused; unfuse it before removing it`);
    this.adapters.delete(name);
    this.version++;
  }

  /**
   * Merges adapters (default: all unfused ones) into the model's weights at their current scales:
   * W ← W + scale · alpha / r · B·A. The graphs then need no adapter inputs.
   */
  fuse(names: readonly string[] = this.names.filter((n) => !this.fusedNames.includes(n))): void {
    for (const name of names) {
      const a = this.need(name);
      if (this.fusedNames.includes(name))
        throw new Error(`${this.owner}: adapter "${name}" is already fused`);
      for (const [layer, l] of a.layers) {
        const key = `${layer}.weight`;
        const w = this.params.get(key)!;
        if (!this.fusedOriginals.has(key)) this.fusedOriginals.set(key, w);
        const delta = loraDelta(l.a, l.b, (l.alpha / l.a.shape[0]!) * a.scale);
        const merged = new Float32Array(w.data.length);
        for (let i = 0; i < merged.length; i++) merged[i] = w.data[i]! + delta[i]!;
        this.params.set(key, new HostTensor(merged, w.shape));
      }
      this.fusedNames.push(name);
    }
    this.version++;
  }

  /** Restores the weights as they were before fusing (bit for bit); the adapters stay loaded, unfused. */
  unfuse(): void {
    for (const [key, w] of this.fusedOriginals) this.params.set(key, w);
    this.fusedOriginals.clear();
    this.fusedNames = [];
    this.version++;
  }

  /** The plan and adapter tensors a graph embeds now: every unfused adapter with a non-zero scale. */
  snapshot(): LoraSnapshot {
    const active = [...this.adapters.values()].filter(
      (a) => !this.fusedNames.includes(a.name) && a.scale !== 0,
    );
    if (active.length === 0) return { plan: undefined, values: new Map() };
    const sites = new Map<string, LoraSite[]>();
    const values: Params = new Map();
    for (const a of active) {
      for (const [layer, l] of a.layers) {
        const rank = l.a.shape[0]!;
        const list = sites.get(layer) ?? [];
        list.push({ adapter: a.name, rank, scale: (l.alpha / rank) * a.scale });
        sites.set(layer, list);
        const n = loraNames(layer, a.name);
        values.set(n.a, l.a);
        values.set(n.b, l.b);
      }
    }
    return { plan: (layer) => sites.get(layer) ?? [], values };
  }

  private need(name: string): Adapter {
    const a = this.adapters.get(name);
    if (!a)
      throw new Error(
        `${this.owner}: no LoRA adapter "${name}" (loaded: ${this.names.length > 0 ? this.names.join(", ") : "none"})`,
      );
    return a;
  }

  /**
   * A 1×1 convolution's adapter may come as linear matrices ([r, in], [out, r]) and a linear layer's as
   * 1×1 kernels (kohya files of models whose proj_in is the other kind): reshaped to fit the weight.
   */
  private fit(layer: string, l: LoraLayer): LoraLayer {
    const w = this.params.get(`${layer}.weight`);
    if (!w) return l;
    const r = l.a.shape[0]!;
    const out = w.shape[0]!;
    const inF = w.shape[1]!;
    const pointwise = w.shape.length === 4 && w.shape[2] === 1 && w.shape[3] === 1;
    if (pointwise && l.a.shape.length === 2 && l.b.shape.length === 2)
      return { ...l, a: l.a.reshape([r, inF, 1, 1]), b: l.b.reshape([out, r, 1, 1]) };
    const isPoint = (t: HostTensor) => t.shape.length === 4 && t.shape[2] === 1 && t.shape[3] === 1;
    if (w.shape.length === 2 && isPoint(l.a) && isPoint(l.b))
      return { ...l, a: l.a.reshape([r, l.a.shape[1]!]), b: l.b.reshape([l.b.shape[0]!, r]) };
    return l;
  }

  private checkLayer(name: string, layer: string, l: LoraLayer): void {
    const w = this.params.get(`${layer}.weight`);
    const where = `${this.owner}: LoRA adapter "${name}" at ${layer}`;
    if (!w) throw new Error(`${where}: the model has no layer ${layer}`);
    const [out, ...rest] = w.shape as [number, ...number[]];
    if (w.shape.length !== 2 && w.shape.length !== 4)
      throw new Error(
        `${where}: ${layer}.weight ${formatShape(w.shape)} is not a linear or convolution weight`,
      );
    const r = l.a.shape[0]!;
    const okA = sameShape(l.a.shape, [r, ...rest]);
    const okB = sameShape(l.b.shape, w.shape.length === 4 ? [out, r, 1, 1] : [out, r]);
    if (!okA || !okB || r < 1) {
      throw new Error(
        `${where}: lora_A ${formatShape(l.a.shape)} and lora_B ${formatShape(l.b.shape)} do not fit the weight ${formatShape(w.shape)} (expected A [r, ${rest.join(", ")}], B [${out}, r${w.shape.length === 4 ? ", 1, 1" : ""}]): the file is for another model`,
      );
    }
    if (!Number.isFinite(l.alpha)) throw new Error(`${where}: alpha ${l.alpha} is not a finite number`);
  }
}

function checkScale(scale: number): void {
  if (!Number.isFinite(scale)) throw new Error(`LoRA scale must be a finite number, got ${scale}`);
}
