// diffuse studio: the page's entry point. Loads what the server offers (/api/info), wires the two
// views (Generate, Training) and switches between them with the tabs or the URL hash (#training).
import { initGenerate, refreshModels } from "./generate.js";
import { initTraining } from "./training.js";

const $ = (id) => document.getElementById(id);

function show(view) {
  for (const name of ["generate", "training"]) {
    $(`view-${name}`).hidden = name !== view;
    $(`tab-${name}`).setAttribute("aria-selected", String(name === view));
  }
}

async function main() {
  const info = await (await fetch("/api/info")).json();
  $("header-note").textContent =
    `${info.models.length} model${info.models.length === 1 ? "" : "s"} · ${info.runs.length} training run${info.runs.length === 1 ? "" : "s"}`;
  for (const tab of document.querySelectorAll("nav button")) {
    tab.addEventListener("click", () => {
      history.replaceState(null, "", tab.dataset.view === "generate" ? "#" : `#${tab.dataset.view}`);
      show(tab.dataset.view);
      if (tab.dataset.view === "generate") void refreshModels();
    });
  }
  show(location.hash === "#training" ? "training" : "generate");
  await Promise.all([initGenerate(info), initTraining()]);
  document.body.dataset.ready = "true";
}

main().catch((e) => {
  document.body.prepend(
    Object.assign(document.createElement("p"), { className: "error", textContent: e.message }),
  );
});
