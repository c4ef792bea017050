/**
 * Optimizer updates as graph functions: global-norm gradient clipping, AdamW (Loshchilov & Hutter
 * 2019, PyTorch's torch.optim.AdamW arithmetic) and an exponential moving average of the weights.
 * They run inside the training-step graph, so an update costs no extra round trip.
 */
import * as o from "../tensor/ops.ts";
import type { Tensor } from "../tensor/symbolic.ts";

export interface AdamWConfig {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

export const defaultAdamW: AdamWConfig = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 };

/** √(Σ‖g‖²) over all gradients. */
export function globalNorm(grads: readonly Tensor[]): Tensor {
  const sq = grads.map((g) => o.sum(o.square(g)));
  return o.sqrt(sq.reduce((a, b) => o.add(a, b)));
}

/** Scales gradients by min(1, maxNorm / (‖g‖ + 1e-6)), as torch.nn.utils.clip_grad_norm_. */
export function clipByGlobalNorm(grads: readonly Tensor[], norm: Tensor, maxNorm: number): Tensor[] {
  const coef = o.minimum(o.div(maxNorm, o.add(norm, 1e-6)), 1);
  return grads.map((g) => o.mul(g, coef));
}

export interface AdamWScalars {
  /** learning rate */
  lr: Tensor;
  /** 1 − β1ᵗ */
  bc1: Tensor;
  /** 1 − β2ᵗ */
  bc2: Tensor;
}

/**
 * One AdamW step for one parameter:
 *   p ← p − lr·λ·p;  m ← β1 m + (1−β1) g;  v ← β2 v + (1−β2) g²;
 *   p ← p − (lr / (1−β1ᵗ)) · m / (√v / √(1−β2ᵗ) + ε)
 */
export function adamwUpdate(
  p: Tensor,
  g: Tensor,
  m: Tensor,
  v: Tensor,
  s: AdamWScalars,
  c: AdamWConfig,
): { p: Tensor; m: Tensor; v: Tensor } {
  const decayed = c.weightDecay === 0 ? p : o.mul(p, o.sub(1, o.mul(s.lr, c.weightDecay)));
  const m2 = o.add(o.mul(m, c.beta1), o.mul(g, 1 - c.beta1));
  const v2 = o.add(o.mul(v, c.beta2), o.mul(o.square(g), 1 - c.beta2));
  const denom = o.add(o.div(o.sqrt(v2), o.sqrt(s.bc2)), c.eps);
  const stepSize = o.div(s.lr, s.bc1);
  return { p: o.sub(decayed, o.mul(stepSize, o.div(m2, denom))), m: m2, v: v2 };
}

/** ema ← decay·ema + (1 − decay)·p */
export function emaUpdate(ema: Tensor, p: Tensor, decay: Tensor): Tensor {
  return o.add(ema, o.mul(o.sub(p, ema), o.sub(1, decay)));
}
