// diffuse studio: the Generate view. The form posts to /api/generate and follows the event stream:
// each step replaces the x_t and x̂0 images and advances the counter; at the end the result shows
// the grid, its parameters, downloads and the animated trajectory, and the gallery gains a card.
// A class-conditional model gets the class picker; a text-to-image model a prompt box (Enter
// generates, Shift+Enter starts a new line) and a negative prompt, its previews decoded by its VAE.
// A model with a ControlNet also gets a control image: drawn (white lines on black) or loaded from a
// picture (optionally with its edges found by the server's Canny), its scale and guess mode; the
// image the ControlNet reads comes back with the job's parameters and is shown beside the drawing.
// The LoRA files the studio offers for a text-to-image model are listed, each with a scale.
import { readEvents } from "./sse.js";

const $ = (id) => document.getElementById(id);

let models = [];
let running = null; // { controller, jobId }
let shownModel = null; // the model the form was last set up for

function modelById(id) {
  return models.find((m) => m.id === id);
}

/** Shows the prompt box for a text-to-image model, the class picker for the others, the control image for a ControlNet. */
function showConditionFields(m) {
  $("control-field").hidden = !m.control;
  showLoras(m);
  $("label-field").hidden = m.prompts;
  $("prompt-field").hidden = !m.prompts;
  $("negative-field").hidden = !m.prompts;
  if (!m.prompts) return;
  $("prompt").placeholder = m.promptExample ?? "describe the image";
  $("prompt-hint").textContent = m.promptTokens ? `up to ${m.promptTokens} tokens` : "";
}

/** Fills the class and sampler menus for the chosen model. */
function onModelChange() {
  const m = modelById($("model").value);
  if (!m) return;
  showConditionFields(m);
  const label = $("label");
  const previousLabel = label.value;
  label.replaceChildren();
  if (m.numClasses === null) {
    label.append(new Option("unconditional", "none"));
    label.disabled = true;
  } else {
    label.disabled = false;
    label.append(new Option(`all classes (0–${m.numClasses - 1})`, "all"));
    for (let c = 0; c < m.numClasses; c++) label.append(new Option(`class ${c}`, String(c)));
    if ([...label.options].some((o) => o.value === previousLabel)) label.value = previousLabel;
  }
  const sched = $("scheduler");
  const previous = sched.value;
  sched.replaceChildren(...m.schedulers.map((s) => new Option(s, s)));
  const recommended = m.schedulers.includes(m.defaults.scheduler) ? m.defaults.scheduler : m.schedulers[0];
  sched.value = m.schedulers.includes(previous) && m.id === shownModel ? previous : recommended;
  const bits = [
    m.prompts && "text to image",
    m.dataset && `trained on ${m.dataset}`,
    m.trainedSteps && `${m.trainedSteps} steps`,
    m.distilled &&
      `distilled (${m.distilled.method})${m.distilled.teacher ? ` from ${m.distilled.teacher}` : ""}: samples in ${m.defaults.steps} step${m.defaults.steps === 1 ? "" : "s"}`,
    `${m.sampleSize}×${m.sampleSize}`,
    m.source === "run" ? "from a training run" : m.source,
  ].filter(Boolean);
  $("model-note").textContent = bits.join(" · ");
  const size = $("size");
  size.step = String(m.sizeMultiple);
  size.min = String(Math.max(8, m.sizeMultiple));
  if (m.id !== shownModel) {
    // a newly chosen model starts from its own recommended settings
    size.value = String(m.sampleSize);
    $("steps").value = String(m.defaults.steps);
    $("guidance").value = String(m.defaults.guidance);
    $("karras").checked = m.defaults.karras;
    showSliders();
  }
  shownModel = m.id;
}

/** The control image at the model's image size, as a PNG data URL (small: the request body is bounded). */
function controlImage(size) {
  const c = document.createElement("canvas");
  c.width = size;
  c.height = size;
  const g = c.getContext("2d");
  g.imageSmoothingQuality = "high";
  g.drawImage($("control-canvas"), 0, 0, size, size);
  return c.toDataURL("image/png");
}

/** One row per LoRA file offered for the model: a checkbox and a scale; kept when the model changes back. */
function showLoras(m) {
  const list = $("lora-list");
  const ids = m.loras ?? [];
  $("lora-field").hidden = ids.length === 0;
  if (list.dataset.model === m.id) return;
  list.dataset.model = m.id;
  list.replaceChildren(
    ...ids.map((id) => {
      const row = document.createElement("label");
      const on = document.createElement("input");
      on.type = "checkbox";
      on.dataset.lora = id;
      const name = document.createElement("span");
      name.textContent = id;
      const scale = document.createElement("input");
      scale.type = "number";
      scale.step = "0.05";
      scale.min = "-10";
      scale.max = "10";
      scale.value = "1";
      scale.title = `the scale of ${id}`;
      scale.dataset.loraScale = id;
      row.append(on, name, scale);
      return row;
    }),
  );
}

function readLoras(m) {
  if (!m?.loras?.length) return {};
  const chosen = [...document.querySelectorAll("#lora-list input[data-lora]")].filter((c) => c.checked);
  if (chosen.length === 0) return {};
  return {
    loras: chosen.map((c) => ({
      id: c.dataset.lora,
      scale: Number(document.querySelector(`input[data-lora-scale="${CSS.escape(c.dataset.lora)}"]`).value),
    })),
  };
}

function readControl(m) {
  if (!m?.control || !$("control-on").checked) return {};
  return {
    control: {
      image: controlImage(Number($("size").value) || m.sampleSize),
      scale: Number($("control-scale").value),
      guessMode: $("control-guess").checked,
      detect: $("control-detect").checked ? "canny" : "none",
    },
  };
}

function readForm() {
  const m = modelById($("model").value);
  const label = $("label").value;
  return {
    ...readControl(m),
    ...readLoras(m),
    model: $("model").value,
    ...(m?.prompts ? { prompt: $("prompt").value, negativePrompt: $("negative-prompt").value } : {}),
    ...(m && !m.prompts && m.numClasses !== null ? { label: label === "all" ? "all" : Number(label) } : {}),
    scheduler: $("scheduler").value,
    karras: $("karras").checked,
    steps: Number($("steps").value),
    guidance: Number($("guidance").value),
    seed: Number($("seed").value),
    count: Number($("count").value),
    size: Number($("size").value),
  };
}

/** Puts parameters (from the gallery) back into the form. */
function fillForm(p) {
  if (modelById(p.model)) {
    $("model").value = p.model;
    onModelChange();
  }
  if (p.prompt !== null && p.prompt !== undefined) {
    $("prompt").value = p.prompt;
    $("negative-prompt").value = p.negativePrompt ?? "";
  } else $("label").value = p.label === null ? "none" : String(p.label);
  $("scheduler").value = p.scheduler;
  $("karras").checked = p.karras;
  $("steps").value = String(p.steps);
  $("guidance").value = String(p.guidance);
  $("seed").value = String(p.seed);
  $("count").value = String(p.count);
  $("size").value = String(p.size);
  for (const c of document.querySelectorAll("#lora-list input[data-lora]")) {
    const given = (p.loras ?? []).find((l) => l.id === c.dataset.lora);
    c.checked = Boolean(given);
    if (given)
      document.querySelector(`input[data-lora-scale="${CSS.escape(given.id)}"]`).value = String(given.scale);
  }
  $("control-on").checked = Boolean(p.control);
  if (p.control) {
    // the image the ControlNet read goes back on the canvas, its edges already found
    $("control-scale").value = String(p.control.scale);
    $("control-guess").checked = p.control.guessMode;
    $("control-detect").checked = false;
    showControlImage(p.control.image);
    const img = new Image();
    img.onload = () => drawOnCanvas(img);
    img.src = p.control.image;
  }
  showSliders();
}

function showSliders() {
  $("steps-out").textContent = $("steps").value;
  $("guidance-out").textContent = $("guidance").value;
  $("control-scale-out").textContent = $("control-scale").value;
}

/** The control canvas: black, drawn on in white; a loaded picture fills it (centre-cropped). */
function clearCanvas() {
  const c = $("control-canvas");
  const g = c.getContext("2d");
  g.fillStyle = "#000";
  g.fillRect(0, 0, c.width, c.height);
}

function drawOnCanvas(img) {
  const c = $("control-canvas");
  const side = Math.min(img.naturalWidth, img.naturalHeight);
  clearCanvas();
  c.getContext("2d").drawImage(
    img,
    (img.naturalWidth - side) / 2,
    (img.naturalHeight - side) / 2,
    side,
    side,
    0,
    0,
    c.width,
    c.height,
  );
}

function showControlImage(url) {
  $("control-edges").src = url;
}

function initControl() {
  const c = $("control-canvas");
  clearCanvas();
  let last = null;
  const at = (ev) => {
    const r = c.getBoundingClientRect();
    return [((ev.clientX - r.left) * c.width) / r.width, ((ev.clientY - r.top) * c.height) / r.height];
  };
  c.addEventListener("pointerdown", (ev) => {
    c.setPointerCapture(ev.pointerId);
    last = at(ev);
    $("control-on").checked = true;
  });
  c.addEventListener("pointermove", (ev) => {
    if (!last) return;
    const g = c.getContext("2d");
    const p = at(ev);
    g.strokeStyle = "#fff";
    g.lineWidth = c.width / (Number($("size").value) || 64); // about one pixel of the image
    g.lineCap = "round";
    g.beginPath();
    g.moveTo(...last);
    g.lineTo(...p);
    g.stroke();
    last = p;
  });
  const stop = () => {
    last = null;
  };
  c.addEventListener("pointerup", stop);
  c.addEventListener("pointercancel", stop);
  $("control-clear").addEventListener("click", () => {
    clearCanvas();
    $("control-file").value = "";
  });
  $("control-file").addEventListener("change", () => {
    const file = $("control-file").files[0];
    if (!file) return;
    const img = new Image();
    img.onload = () => {
      drawOnCanvas(img);
      URL.revokeObjectURL(img.src);
      // a loaded picture is usually not an edge map yet: find its edges (uncheck for an edge map)
      $("control-detect").checked = true;
      $("control-on").checked = true;
    };
    img.src = URL.createObjectURL(file);
  });
  $("control-scale").addEventListener("input", showSliders);
}

/** Wide grids (a row per sample of every class) read better one above the other than side by side. */
function fitLayout(img) {
  const wide = img.naturalWidth > 2.2 * img.naturalHeight;
  for (const pair of document.querySelectorAll(".pair")) pair.classList.toggle("stacked", wide);
}

function setBusy(busy) {
  $("generate").disabled = busy;
  $("cancel").disabled = !busy;
}

/** What an image was conditioned on: its prompt (and negative prompt), or its class. */
function conditionOf(p) {
  if (p.prompt === null || p.prompt === undefined) return [["class", p.label === null ? "none" : p.label]];
  return [["prompt", p.prompt], ...(p.negativePrompt ? [["negative prompt", p.negativePrompt]] : [])];
}

function describeParams(p) {
  // prompts take a whole line each: they come first, so the short values share the rows below
  const model = ["model", p.model];
  return [
    ...(p.prompt ? [...conditionOf(p), model] : [model, ...conditionOf(p)]),
    ["sampler", p.scheduler + (p.karras ? " (Karras)" : "")],
    ["steps", p.steps],
    ["guidance", p.guidance],
    ["seed", p.seed],
    ["images", p.count],
    ["size", `${p.size}×${p.size}`],
    ...(p.loras?.length ? [["LoRA", p.loras.map((l) => `${l.id} × ${l.scale}`).join(", ")]] : []),
    ...(p.control
      ? [
          [
            "control",
            `scale ${p.control.scale}${p.control.guessMode ? ", guess mode" : ""}${p.control.detect === "canny" ? ", Canny edges" : ""}`,
          ],
        ]
      : []),
  ];
}

let shown = null;

function showResult(entry) {
  shown = entry;
  $("result").hidden = false;
  $("result-image").src = entry.image;
  $("result-anim").src = entry.animation;
  $("result-time").textContent = `${(entry.ms / 1000).toFixed(1)} s`;
  $("download-png").href = `${entry.image}?download=1`;
  $("download-anim").href = `${entry.animation}?download=1`;
  const dl = $("result-params");
  dl.replaceChildren();
  for (const [k, v] of describeParams(entry.params)) {
    const div = document.createElement("div");
    if (k.endsWith("prompt")) div.className = "wide"; // a prompt gets a line of its own
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = k;
    dd.textContent = String(v);
    div.append(dt, dd);
    dl.append(div);
  }
  for (const card of document.querySelectorAll(".card")) {
    card.classList.toggle("selected", card.dataset.id === entry.id);
  }
}

function addCard(entry, { prepend = true } = {}) {
  $("gallery-empty").hidden = true;
  const card = document.createElement("article");
  card.className = "card";
  card.dataset.id = entry.id;
  const img = document.createElement("img");
  img.src = entry.image;
  const q = entry.params;
  img.alt = q.prompt ? `generation ${entry.id}: ${q.prompt}` : `generation ${entry.id}`;
  const p = document.createElement("p");
  const what = q.prompt ? `“${q.prompt}”` : `class ${q.label ?? "none"}`;
  p.textContent = `${q.model} · ${what} · ${q.scheduler} · ${q.steps} steps · w ${q.guidance} · seed ${q.seed}`;
  const rerun = document.createElement("button");
  rerun.type = "button";
  rerun.textContent = "Re-run";
  rerun.title = "run again with the same parameters and seed";
  rerun.addEventListener("click", (ev) => {
    ev.stopPropagation();
    fillForm(q);
    void generate();
  });
  card.append(img, p, rerun);
  card.addEventListener("click", () => showResult(entry));
  if (prepend) $("gallery").prepend(card);
  else $("gallery").append(card);
}

async function generate() {
  if (running) return;
  $("gen-error").textContent = "";
  const params = readForm();
  const controller = new AbortController();
  running = { controller, jobId: null };
  setBusy(true);
  $("step-counter").textContent = "sending…";
  $("step-t").textContent = "";
  $("step-progress").value = 0;
  try {
    const res = await fetch("/api/generate", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(params),
      signal: controller.signal,
    });
    if (!res.ok) {
      const body = await res.json().catch(() => ({ error: res.statusText }));
      throw new Error(body.error);
    }
    for await (const { event, data } of readEvents(res)) {
      if (event === "queued") {
        running.jobId = data.id;
        if (data.params?.control) showControlImage(data.params.control.image);
        $("step-counter").textContent =
          data.position > 1 ? `waiting: place ${data.position} in line` : "starting…";
      } else if (event === "start") {
        $("step-counter").textContent = "loading the model…";
      } else if (event === "step") {
        $("live-x").src = data.x;
        $("live-x0").src = data.x0;
        $("step-counter").textContent = `step ${data.i + 1} / ${data.steps}`;
        $("step-t").textContent = `t = ${Math.round(data.t)}`;
        $("step-progress").value = (data.i + 1) / data.steps;
      } else if (event === "done") {
        $("step-counter").textContent = `done: step ${params.steps} / ${params.steps}`;
        $("step-progress").value = 1;
        addCard(data);
        showResult(data);
      } else if (event === "cancelled") {
        $("step-counter").textContent = "cancelled";
      } else if (event === "error") {
        throw new Error(data.message);
      }
    }
  } catch (e) {
    if (e.name === "AbortError") $("step-counter").textContent = "cancelled";
    else {
      $("gen-error").textContent = e.message;
      $("step-counter").textContent = "failed";
    }
  } finally {
    running = null;
    setBusy(false);
  }
}

async function cancel() {
  if (!running) return;
  const { controller, jobId } = running;
  $("step-counter").textContent = "cancelling…";
  if (jobId) {
    // the server confirms with a "cancelled" event; closing the stream would cancel too
    const res = await fetch(`/api/jobs/${encodeURIComponent(jobId)}`, { method: "DELETE" }).catch(() => null);
    if (res?.ok) return;
  }
  controller.abort();
}

/** Shows the served models; keeps the choice when it is still there. */
function setModels(list, force = false) {
  const select = $("model");
  const keep = select.value;
  const changed = list.map((m) => m.id + m.stamp).join() !== models.map((m) => m.id + m.stamp).join();
  models = list;
  if (!changed && !force) return;
  select.replaceChildren(...models.map((m) => new Option(m.id, m.id)));
  if (modelById(keep)) select.value = keep;
  const none = models.length === 0;
  $("gen-error").textContent = none ? "No models are served: start the studio with --model DIR." : "";
  if (!running) $("generate").disabled = none;
  if (!none) onModelChange();
}

/** Training runs export their model as they go: pick up new and updated models. */
export async function refreshModels() {
  const info = await (await fetch("/api/info")).json();
  setModels(info.models);
}

export async function initGenerate(info) {
  const select = $("model");
  setModels(info.models, true);
  select.addEventListener("focus", () => void refreshModels());
  $("steps").max = String(Math.min(info.limits.steps.max, 100));
  $("count").max = String(info.limits.count.max);
  $("size").max = String(info.limits.size.max);
  select.addEventListener("change", onModelChange);
  $("steps").addEventListener("input", showSliders);
  $("guidance").addEventListener("input", showSliders);
  $("seed-random").addEventListener("click", () => {
    $("seed").value = String(Math.floor(Math.random() * 2 ** 31));
  });
  $("gen-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    void generate();
  });
  $("prompt").addEventListener("keydown", (ev) => {
    if (ev.key !== "Enter" || ev.shiftKey || ev.isComposing) return;
    ev.preventDefault();
    $("gen-form").requestSubmit();
  });
  $("cancel").addEventListener("click", () => void cancel());
  initControl();
  $("result-rerun").addEventListener("click", () => {
    if (!shown) return;
    fillForm(shown.params);
    void generate();
  });
  showSliders();
  $("live-x").addEventListener("load", (ev) => fitLayout(ev.target));
  $("result-image").addEventListener("load", (ev) => fitLayout(ev.target));
  const gallery = await (await fetch("/api/gallery")).json();
  for (const entry of gallery.entries) addCard(entry, { prepend: false });
}
