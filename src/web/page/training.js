// diffuse studio: the Training view. Follows one run through /api/runs/ID/events (EventSource, which
// reconnects by itself): the loss curve redraws as rows arrive, the newest sample grid is shown
// large with the earlier ones in a strip, and the run list refreshes to pick up new runs.
import { drawLossPlot } from "./plot.js";

const $ = (id) => document.getElementById(id);

let source = null;
let rows = [];
let summary = null;
let current = null;
let drawQueued = false;
let pinned = null; // a sample grid the user clicked (null: follow the newest)

function redraw() {
  if (drawQueued) return;
  drawQueued = true;
  requestAnimationFrame(() => {
    drawQueued = false;
    drawLossPlot($("loss-plot"), rows, { log: $("log-scale").checked, totalSteps: summary?.steps ?? null });
    showStats();
  });
}

function stat(name, value) {
  const div = document.createElement("div");
  const dt = document.createElement("dt");
  const dd = document.createElement("dd");
  dt.textContent = name;
  dd.textContent = value;
  div.append(dt, dd);
  return div;
}

function ago(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  return s < 60 ? `${s} s ago` : s < 3600 ? `${Math.round(s / 60)} min ago` : `${Math.round(s / 3600)} h ago`;
}

function showStats() {
  const last = rows[rows.length - 1];
  const dl = $("run-stats");
  dl.replaceChildren();
  if (!last) {
    dl.append(stat("step", "—"));
    return;
  }
  const total = summary?.steps ? ` / ${summary.steps}` : "";
  dl.append(
    stat("step", `${last.step}${total}`),
    stat("loss", last.loss.toPrecision(4)),
    stat("learning rate", last.lr !== undefined ? last.lr.toExponential(2) : "—"),
    stat("images / s", last.img_per_s !== undefined ? last.img_per_s.toFixed(1) : "—"),
    stat("updated", last.time ? ago(last.time) : "—"),
  );
}

function sampleUrl(name) {
  return `/api/runs/${encodeURIComponent(current)}/samples/${encodeURIComponent(name)}`;
}

function showSample(name) {
  $("run-sample").src = sampleUrl(name);
  $("sample-step").textContent = `step ${Number(name.slice(5, -4))}${pinned ? "" : " (latest)"}`;
  for (const f of document.querySelectorAll(".strip figure"))
    f.classList.toggle("selected", f.dataset.name === name);
}

function showSamples(names) {
  const strip = $("sample-strip");
  strip.replaceChildren();
  if (names.length === 0) {
    $("run-sample").removeAttribute("src");
    $("sample-step").textContent = "none yet (the run writes a grid every output.sample_every steps)";
    return;
  }
  for (const name of names.slice(-8).reverse()) {
    const fig = document.createElement("figure");
    fig.dataset.name = name;
    const img = document.createElement("img");
    img.src = sampleUrl(name);
    img.alt = name;
    img.title = `step ${Number(name.slice(5, -4))}`;
    fig.append(img);
    fig.addEventListener("click", () => {
      pinned = pinned === name ? null : name;
      showSample(pinned ?? names[names.length - 1]);
    });
    strip.append(fig);
  }
  showSample(pinned && names.includes(pinned) ? pinned : names[names.length - 1]);
}

function follow(id) {
  source?.close();
  current = id;
  rows = [];
  pinned = null;
  redraw();
  if (!id) return;
  source = new EventSource(`/api/runs/${encodeURIComponent(id)}/events`);
  source.addEventListener("reset", (ev) => {
    rows = [];
    summary = JSON.parse(ev.data).run;
    redraw();
  });
  source.addEventListener("metrics", (ev) => {
    rows.push(...JSON.parse(ev.data).rows);
    redraw();
  });
  source.addEventListener("samples", (ev) => {
    const data = JSON.parse(ev.data);
    summary = data.run;
    showSamples(data.names);
  });
}

async function refreshRuns() {
  const { runs } = await (await fetch("/api/runs")).json();
  const select = $("run");
  const known = [...select.options].map((o) => o.value).join(",");
  if (runs.map((r) => r.id).join(",") !== known) {
    select.replaceChildren(...runs.map((r) => new Option(r.id, r.id)));
    if (current && runs.some((r) => r.id === current)) select.value = current;
  }
  $("no-runs").hidden = runs.length > 0;
  return runs;
}

export async function initTraining() {
  const runs = await refreshRuns();
  $("run").addEventListener("change", () => follow($("run").value));
  $("log-scale").addEventListener("change", redraw);
  if (runs.length) {
    // follow the run updated last
    const newest = [...runs].sort((a, b) => (b.updated ?? 0) - (a.updated ?? 0))[0];
    $("run").value = newest.id;
    follow(newest.id);
  } else redraw();
  setInterval(() => {
    if (!$("view-training").hidden) void refreshRuns();
    showStats();
  }, 5000);
}
