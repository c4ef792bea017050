// diffuse studio: the loss plot, drawn as SVG with axes, grid lines and tick labels. The y axis is
// linear or logarithmic; ticks follow the 1-2-5 rule (linear) or powers of ten (log).

const NS = "http://www.w3.org/2000/svg";

function el(name, attrs, text) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

/** About `n` round tick values covering [lo, hi]: steps of 1, 2 or 5 times a power of ten. */
export function niceTicks(lo, hi, n = 5) {
  if (!(hi > lo)) hi = lo + 1;
  const raw = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const r = raw / mag;
  const step = (r < 1.5 ? 1 : r < 3 ? 2 : r < 7 ? 5 : 10) * mag;
  const ticks = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) {
    ticks.push(Number(v.toPrecision(12)));
  }
  return ticks;
}

/** Ticks for a log axis over [lo, hi] (both > 0): powers of ten, with 2 and 5 between when few. */
export function logTicks(lo, hi) {
  const a = Math.floor(Math.log10(lo));
  const b = Math.ceil(Math.log10(hi));
  const ticks = [];
  for (let e = a; e <= b; e++) {
    const mults = b - a <= 2 ? [1, 2, 5] : [1];
    for (const m of mults) {
      const v = Number((m * 10 ** e).toPrecision(6));
      if (v >= lo * 0.999 && v <= hi * 1.001) ticks.push(v);
    }
  }
  // a range within one decade: evenly spaced round values read better than one or two powers of ten
  return ticks.length >= 3 ? ticks : niceTicks(lo, hi, 4).filter((v) => v > 0);
}

const fmtStep = (v) => (v >= 1000 ? `${Number((v / 1000).toPrecision(3))}k` : String(v));
const fmtLoss = (v) => (v >= 0.01 && v < 1000 ? String(Number(v.toPrecision(3))) : v.toExponential(0));

/**
 * A centred moving average over about 1/15 of the points: no lag, unlike an EMA. The window
 * shrinks symmetrically near the ends, so the first points are not pulled towards later ones
 * (the loss falls by orders of magnitude early on). `log` averages log-losses (for a log axis).
 */
export function smooth(values, log = false) {
  const k = Math.max(1, Math.round(values.length / 30));
  const v = log ? values.map(Math.log) : values;
  const prefix = [0];
  for (const x of v) prefix.push(prefix[prefix.length - 1] + x);
  return v.map((_, i) => {
    const half = Math.min(k, i, v.length - 1 - i);
    const mean = (prefix[i + half + 1] - prefix[i - half]) / (2 * half + 1);
    return log ? Math.exp(mean) : mean;
  });
}

/**
 * Draws rows ({step, loss}) into `svg` (its viewBox sets the size). `totalSteps` fixes the x range
 * to the whole run, so the curve grows across the plot while it trains.
 */
export function drawLossPlot(svg, rows, { log = true, totalSteps = null } = {}) {
  const [, , W, H] = svg.getAttribute("viewBox").split(" ").map(Number);
  const m = { left: 64, right: 18, top: 14, bottom: 46 };
  const w = W - m.left - m.right;
  const h = H - m.top - m.bottom;
  svg.replaceChildren();
  const pts = rows.filter((r) => Number.isFinite(r.loss) && (!log || r.loss > 0));
  if (pts.length === 0) {
    svg.append(
      el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, "no loss logged yet"),
    );
    return;
  }
  const steps = pts.map((r) => r.step);
  const losses = pts.map((r) => r.loss);
  const xMax = Math.max(totalSteps ?? 0, steps[steps.length - 1], 1);
  const xTicks = niceTicks(0, xMax, 6);
  const x1 = Math.max(xMax, xTicks[xTicks.length - 1]);
  let lo = Math.min(...losses);
  let hi = Math.max(...losses);
  let yTicks;
  if (log) {
    // half-decade bounds: the curve fills the plot without hugging its edges
    lo = 10 ** (Math.floor(Math.log10(lo) * 2) / 2);
    hi = 10 ** (Math.ceil(Math.log10(hi) * 2) / 2);
    if (hi <= lo) hi = lo * 10;
    yTicks = logTicks(lo, hi);
  } else {
    yTicks = niceTicks(0, hi * 1.05, 5);
    lo = 0;
    hi = yTicks[yTicks.length - 1];
  }
  const sx = (v) => m.left + (v / x1) * w;
  const ty = log ? Math.log10 : (v) => v;
  const sy = (v) => m.top + h - ((ty(v) - ty(lo)) / (ty(hi) - ty(lo))) * h;

  for (const v of yTicks) {
    const y = sy(v);
    svg.append(el("line", { x1: m.left, x2: m.left + w, y1: y, y2: y, class: "grid" }));
    svg.append(el("text", { x: m.left - 8, y: y + 4, "text-anchor": "end" }, fmtLoss(v)));
  }
  for (const v of xTicks) {
    const x = sx(v);
    svg.append(el("line", { x1: x, x2: x, y1: m.top, y2: m.top + h, class: "grid" }));
    svg.append(el("text", { x, y: m.top + h + 18, "text-anchor": "middle" }, fmtStep(v)));
  }
  svg.append(el("line", { x1: m.left, x2: m.left + w, y1: m.top + h, y2: m.top + h, class: "axis" }));
  svg.append(el("line", { x1: m.left, x2: m.left, y1: m.top, y2: m.top + h, class: "axis" }));
  svg.append(el("text", { x: m.left + w / 2, y: H - 6, "text-anchor": "middle" }, "training step"));
  svg.append(
    el(
      "text",
      { x: 14, y: m.top + h / 2, "text-anchor": "middle", transform: `rotate(-90 14 ${m.top + h / 2})` },
      "loss",
    ),
  );
  const path = (ys) =>
    ys.map((y, i) => `${i ? "L" : "M"}${sx(steps[i]).toFixed(1)},${sy(y).toFixed(1)}`).join("");
  svg.append(el("path", { d: path(losses), class: "raw" }));
  svg.append(el("path", { d: path(smooth(losses, log)), class: "smooth" }));
}
