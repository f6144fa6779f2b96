// Models, and one model's versions as a lineage graph with a table of the same versions.

import { getAll, getJson } from "../api.js";
import { badge, empty, h, short, table, when } from "../dom.js";
import { lineageGraph } from "../lineage.js";

const enc = encodeURIComponent;

export async function renderModels(view, _args, signal) {
  const models = await getAll("/v1/models", {}, signal);
  view.append(h("h2", null, "Models"));
  if (!models.length) {
    view.append(empty("No models yet."));
    return;
  }
  const columns = [
    { label: "Name", cell: (m) => h("a", { href: `#/models/${enc(m.name)}` }, m.name) },
    { label: "Task", cell: (m) => m.task },
    { label: "Architecture", cell: (m) => m.architecture?.name ?? "—" },
    { label: "Latest version", cell: (m) => m.latest_version ?? "—" },
    { label: "Tags", cell: (m) => m.tags.join(", ") },
    { label: "Updated", cell: (m) => when(m.updated_at) },
  ];
  view.append(table(columns, models, { attrs: { id: "models-table" }, rowAttrs: (m) => ({ "data-model": m.name }) }));
}

const versionColumns = [
  { label: "Version", cell: (v) => `v${v.version}` },
  { label: "Parent", cell: (v) => (v.parent_version ? `v${v.parent_version}` : "—") },
  { label: "Status", cell: (v) => badge(v.status) },
  { label: "Retired", cell: (v) => (v.retired_reason ? `${v.retired_reason} (${when(v.retired_at)})` : "—") },
  { label: "Training data", cell: (v) => (v.training_data ? `${v.training_data.dataset} v${v.training_data.version}` : "—") },
  {
    label: "Made by",
    cell: (v) => (v.created_by_job ? h("a", { href: `#/jobs/${enc(v.created_by_job)}` }, short(v.created_by_job, 16)) : "upload"),
  },
  { label: "sha256", cell: (v) => h("code", null, short(v.sha256, 12)) },
  { label: "Created", cell: (v) => when(v.created_at) },
];

export async function renderModel(view, [name], signal) {
  const [model, versions] = await Promise.all([
    getJson(`/v1/models/${enc(name)}`, {}, signal),
    getAll(`/v1/models/${enc(name)}/versions`, {}, signal),
  ]);
  view.append(
    h("p", { class: "crumbs" }, h("a", { href: "#/models" }, "Models"), " / ", model.name),
    h("h2", null, "Model ", h("code", null, model.name)),
    h("p", { class: "meta" }, `${model.task} · ${model.architecture?.name ?? "?"} · latest v${model.latest_version ?? "—"} · `,
      h("a", { href: `#/jobs?model=${enc(model.name)}` }, "its jobs")),
  );
  if (model.description) view.append(h("p", null, model.description));
  view.append(h("h3", null, "Lineage"));
  if (!versions.length) {
    view.append(empty("No versions yet."));
    return;
  }
  view.append(
    h("div", { class: "graph-scroll" }, lineageGraph(versions, model.latest_version)),
    h("p", { class: "legend-note" }, "Arrows run from a version to the version unlearning made from it; dashed lines link each version to the training data it reflects. Retired versions are greyed, with the reason."),
    h("h3", null, "Versions"),
    table(versionColumns, versions, { attrs: { id: "versions-table" }, rowAttrs: (v) => ({ "data-version": v.version }) }),
  );
}
