/**
 * The traced side of consistency distillation (lcm.ts has the method, its plan and its host-side
 * batch): the student's estimate f_θ(x_{n+k}, t_n), the teacher's guided DDIM step to x_n, the target
 * network's f_θ⁻(x_n, s), the distance between them, and the training-step loss over the three
 * networks (the teacher's weights constants, the target's fed as `target.<name>` inputs).
 */
import type { BoundDenoiser } from "../models/registry.ts";
import type { HostTensor } from "../tensor/host.ts";
import * as o from "../tensor/ops.ts";
import { ParamScope, type Params } from "../tensor/params.ts";
import type { Tensor } from "../tensor/symbolic.ts";
import { type ConsistencyDistance, type LcmPlan, type LcmSettings, TARGET_PREFIX } from "./lcm.ts";
import type { LossFn } from "./train-step.ts";

/** A traced network: x [N, C, H, W], t [N], conditioning inputs → its raw prediction F [N, C, H, W]. */
export type TracedNetwork = (x: Tensor, t: Tensor, cond: Readonly<Record<string, Tensor>>) => Tensor;

export interface LcmNetworks {
  /** f_θ: trained. */
  student: TracedNetwork;
  /** The frozen teacher. */
  teacher: TracedNetwork;
  /** f_θ⁻: the EMA of the student, no gradient. */
  target: TracedNetwork;
}

/** The batch's inputs with a prefix (`cond.`, `teacher_cond.`), the prefix removed. */
function prefixed(b: Readonly<Record<string, Tensor>>, prefix: string): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  for (const [k, v] of Object.entries(b)) if (k.startsWith(prefix)) out[k.slice(prefix.length)] = v;
  return out;
}

/** k₀·x + k₁·F for per-sample k [B, 1, 1, 1]. */
const lin = (k0: Tensor, x: Tensor, k1: Tensor, f: Tensor): Tensor => o.add(o.mul(k0, x), o.mul(k1, f));

/** The student's estimate f_θ(x_{n+k}, t_n) [B, C, H, W] (the only branch with a gradient). */
export function lcmStudentEstimate(nets: LcmNetworks, b: Readonly<Record<string, Tensor>>): Tensor {
  const x = lin(b["a_start"]!, b["x0"]!, b["s_start"]!, b["noise"]!); // x_{n+k} [B, C, H, W]
  const f = nets.student(x, b["t_start"]!, prefixed(b, "cond.")); // [B, C, H, W]
  const x0 = lin(b["x0_x"]!, x, b["x0_f"]!, f); // x̂₀ [B, C, H, W]
  return lin(b["skip_start"]!, x, b["out_start"]!, x0); // [B, C, H, W]
}

/** The teacher's DDIM step x_{n+k} → x_n with guidance ω folded in [B, C, H, W]. */
export function lcmSolverStep(
  nets: Pick<LcmNetworks, "teacher">,
  b: Readonly<Record<string, Tensor>>,
  guidance: number,
): Tensor {
  const x = lin(b["a_start"]!, b["x0"]!, b["s_start"]!, b["noise"]!); // x_{n+k} [B, C, H, W]
  const t = b["t_start"]!;
  const tc = prefixed(b, "teacher_cond.");
  let f: Tensor;
  if (guidance === 1)
    f = nets.teacher(x, t, tc); // [B, C, H, W]
  else {
    const both = nets.teacher(o.concat([x, x], 0), o.concat([t, t], 0), tc); // [2B, C, H, W]
    const [fu, fc] = o.split(both, 0, 2) as [Tensor, Tensor]; // [B, C, H, W] each
    f = o.add(fu, o.mul(o.sub(fc, fu), guidance)); // F(∅) + ω·(F(c) − F(∅))
  }
  const x0 = lin(b["x0_x"]!, x, b["x0_f"]!, f); // x̂₀ [B, C, H, W]
  const eps = lin(b["eps_x"]!, x, b["eps_f"]!, f); // ε̂ [B, C, H, W]
  return lin(b["a_end"]!, x0, b["s_end"]!, eps); // x_n [B, C, H, W]
}

/** The target f_θ⁻(x_n, s) [B, C, H, W] of a solver step's x_n. */
export function lcmTarget(
  nets: Pick<LcmNetworks, "target">,
  b: Readonly<Record<string, Tensor>>,
  xn: Tensor,
): Tensor {
  const f = nets.target(xn, b["t_end"]!, prefixed(b, "cond.")); // [B, C, H, W]
  const x0 = lin(b["end_x0_x"]!, xn, b["end_x0_f"]!, f); // x̂₀ [B, C, H, W]
  return lin(b["skip_end"]!, xn, b["out_end"]!, x0); // [B, C, H, W]
}

/** mean d(a, b): pseudo-Huber √((a − b)² + c²) − c, or squared error. */
export function consistencyDistance(a: Tensor, b: Tensor, kind: ConsistencyDistance, c: number): Tensor {
  const d2 = o.square(o.sub(a, b));
  return kind === "l2" ? o.mean(d2) : o.sub(o.mean(o.sqrt(o.add(d2, c * c))), c);
}

/** The whole consistency distillation loss of one batch over three networks. */
export function lcmLossOf(
  nets: LcmNetworks,
  b: Readonly<Record<string, Tensor>>,
  settings: LcmSettings,
): Tensor {
  const pred = lcmStudentEstimate(nets, b);
  const target = lcmTarget(nets, b, lcmSolverStep(nets, b, settings.guidance));
  return consistencyDistance(pred, target, settings.distance, settings.huberC);
}

/** A network over a scope: the model's forward, its first C output channels (a learned-variance net's mean). */
export function scopedNetwork(model: BoundDenoiser, scope: ParamScope): TracedNetwork {
  const c = model.geometry.inChannels;
  return (x, t, cond) => {
    const out = model.forward(scope, x, t, cond); // [N, C_out, H, W]
    return out.shape[1] === c ? out : o.slice(out, 1, 0, c); // [N, C, H, W]
  };
}

/**
 * The training-step loss: the student over the step's parameters, the teacher's weights as constants,
 * the target network over inputs `target.<name>` (feed them with `targetFeeds`).
 */
export function lcmLoss(plan: LcmPlan, teacher: Params): LossFn {
  return (scope, b) => {
    const nets: LcmNetworks = {
      student: scopedNetwork(plan.model, scope),
      teacher: scopedNetwork(plan.model, ParamScope.frozen(scope.graph, teacher)),
      target: scopedNetwork(plan.model, ParamScope.root(scope.graph).sub(TARGET_PREFIX.slice(0, -1))),
    };
    return lcmLossOf(nets, b, plan.settings);
  };
}

/** The target network's weight feeds (the train state's EMA) by graph input name. */
export function targetFeeds(ema: Params): Record<string, HostTensor> {
  const out: Record<string, HostTensor> = {};
  for (const [k, v] of ema) out[TARGET_PREFIX + k] = v;
  return out;
}
