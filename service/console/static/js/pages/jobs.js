// Jobs: a filtered list whose running jobs update live, and one job's page with its progress,
// before/after plots and acceptance checks.

import { getJson } from "../api.js";
import { badge, empty, h, num, short, table, when } from "../dom.js";
import { TERMINAL, follow, progressView } from "../live.js";
import { accuracyPlot, lossPlots, miaPlot } from "../plots.js";
import { isAbort } from "../problem.js";

const enc = encodeURIComponent;
const STATUSES = ["", "queued", "running", "succeeded", "failed", "cancelled"];
// Each stream holds a connection, and a browser opens about six per host: keep some for the rest.
const MAX_LIVE_ROWS = 3;

function followQuietly(jobId, onSnapshot, signal) {
  follow(jobId, onSnapshot, signal).catch((error) => {
    if (!isAbort(error)) console.warn(`following ${jobId}:`, error);
  });
}

function filterForm(query) {
  const model = h("input", { id: "jobs-model", value: query.get("model") ?? "", placeholder: "any model", autocomplete: "off" });
  const status = h("select", { id: "jobs-status" }, STATUSES.map((s) => h("option", { value: s, selected: s === (query.get("status") ?? "") }, s || "any status")));
  const form = h("form", { class: "filters", id: "jobs-filters" },
    h("label", null, "Model ", model), h("label", null, "Status ", status), h("button", { type: "submit" }, "Apply"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const params = new URLSearchParams();
    if (model.value.trim()) params.set("model", model.value.trim());
    if (status.value) params.set("status", status.value);
    const qs = params.toString();
    window.location.hash = `#/jobs${qs ? `?${qs}` : ""}`;
  });
  return form;
}

export async function renderJobs(view, _args, signal, query) {
  view.append(h("h2", null, "Jobs"), filterForm(query));
  const page = await getJson("/v1/jobs", { model: query.get("model"), status: query.get("status"), limit: 50 }, signal);
  if (!page.items.length) {
    view.append(empty("No jobs match."));
    return;
  }
  const live = new Map();
  const columns = [
    { label: "Job", cell: (j) => h("a", { href: `#/jobs/${enc(j.id)}` }, short(j.id, 16)) },
    { label: "Model", cell: (j) => h("a", { href: `#/models/${enc(j.model)}` }, j.model) },
    { label: "Method", cell: (j) => j.method },
    { label: "Status", cell: (j) => h("span", { class: "status-cell" }, badge(j.status)) },
    {
      label: "Progress",
      cell: (j) => {
        const p = progressView(j);
        live.set(j.id, p);
        return p.el;
      },
    },
    { label: "Samples", cell: (j) => j.n_samples },
    { label: "Versions", cell: (j) => `v${j.base_version ?? "?"} → ${j.result_version ? `v${j.result_version}` : "—"}` },
    { label: "Created", cell: (j) => when(j.created_at) },
  ];
  const t = table(columns, page.items, { attrs: { id: "jobs-table" }, rowAttrs: (j) => ({ "data-job": j.id, "data-status": j.status }) });
  view.append(t);
  for (const job of page.items.filter((j) => !TERMINAL.has(j.status)).slice(0, MAX_LIVE_ROWS)) {
    const row = t.querySelector(`tr[data-job="${CSS.escape(job.id)}"]`);
    followQuietly(job.id, (snap) => {
      live.get(job.id).update(snap);
      row.dataset.status = snap.status;
      row.querySelector(".status-cell").replaceChildren(badge(snap.status));
    }, signal);
  }
}

// --- one job -------------------------------------------------------------------------------------

function facts(job) {
  const rows = [
    ["Model", h("a", { href: `#/models/${enc(job.model)}` }, job.model)],
    ["Method", `${job.method} (seed ${job.seed})`],
    ["Versions", `v${job.base_version ?? "?"} → ${job.result_version ? `v${job.result_version}` : "—"}`],
    ["Deletion requests", job.deletion_requests.map((id) => h("code", null, id)).flatMap((c, i) => (i ? [", ", c] : [c]))],
    ["Samples", job.n_samples],
    ["Attempts", `${job.attempts} of ${job.max_attempts}`],
    ["Created", when(job.created_at)],
    ["Started", when(job.started_at)],
    ["Finished", when(job.finished_at)],
  ];
  if (job.error) rows.push(["Error", h("span", { class: "error-text" }, `${job.error.type ?? "error"}: ${job.error.detail ?? ""}`)]);
  return h("dl", { class: "facts" }, rows.flatMap(([k, v]) => [h("dt", null, k), h("dd", null, v)]));
}

function checkDetails(check) {
  return Object.entries(check)
    .filter(([k]) => k !== "ok")
    .map(([k, v]) => `${k} = ${typeof v === "number" ? num(v, 4) : JSON.stringify(v)}`)
    .join(", ");
}

function checksTable(policy) {
  const entries = Object.entries(policy?.checks ?? {});
  if (!entries.length) return empty("No acceptance checks were recorded.");
  const result = (c) => (c.skipped ? "skipped" : c.ok ? "passed" : "failed");
  return h(
    "div",
    { id: "checks" },
    h("p", { class: `verdict ${policy.accepted ? "ok" : "bad"}`, id: "acceptance" }, policy.accepted ? "Accepted: every check passed" : "Rejected: a check failed"),
    table(
      [
        { label: "Check", cell: ([name]) => name },
        { label: "Result", cell: ([, c]) => h("span", { class: `check-${result(c)}` }, result(c)) },
        { label: "Values", cell: ([, c]) => checkDetails(c) },
      ],
      entries,
      { attrs: { id: "checks-table" }, rowAttrs: ([name, c]) => ({ "data-check": name, "data-ok": String(c.ok) }) },
    ),
  );
}

function runSummary(m) {
  const items = [
    ["elapsed", m.elapsed_s !== undefined ? `${num(m.elapsed_s, 2)} s` : null],
    ["method time", m.method_s !== undefined ? `${num(m.method_s, 2)} s` : null],
    ["steps", m.steps],
    ["stop reason", m.stop_reason],
    ["parameter change (L2)", m.param_l2_change !== undefined ? num(m.param_l2_change, 4) : null],
    ["flags", m.flags?.length ? m.flags.join(", ") : null],
  ].filter(([, v]) => v !== null && v !== undefined);
  return h("dl", { class: "facts" }, items.flatMap(([k, v]) => [h("dt", null, k), h("dd", null, v)]));
}

function metricsSection(job) {
  const m = job.metrics;
  if (!m?.before || !m?.after) {
    return empty(TERMINAL.has(job.status) ? "This job recorded no before/after metrics." : "Metrics appear when the job ends.");
  }
  return h(
    "section",
    { id: "metrics" },
    h("h3", null, "Before and after"),
    h("div", { class: "plots" }, accuracyPlot(m), ...lossPlots(m), miaPlot(m)),
    h("h3", null, "Acceptance checks"),
    checksTable(m.policy),
    h("h3", null, "Run"),
    runSummary(m),
  );
}

export async function renderJob(view, [id], signal) {
  const job = await getJson(`/v1/jobs/${enc(id)}`, {}, signal);
  const status = h("span", { id: "job-status" });
  const progress = progressView(job);
  const body = h("div", { id: "job-body" });
  const draw = (j) => {
    status.replaceChildren(badge(j.status));
    progress.update(j);
    body.replaceChildren(facts(j), metricsSection(j));
  };
  view.append(
    h("p", { class: "crumbs" }, h("a", { href: "#/jobs" }, "Jobs"), " / ", job.id),
    h("h2", null, "Job ", h("code", null, job.id)),
    h("p", { class: "meta" }, "Status ", status, " ", progress.el),
    body,
  );
  draw(job);
  if (TERMINAL.has(job.status)) return;
  // Not awaited: the page is shown now, and each event redraws it until the job ends.
  let events = 0;
  progress.el.dataset.live = "following";
  follow(job.id, (snap) => {
    progress.el.dataset.events = String(++events);
    draw(snap);
  }, signal)
    .then(() => { progress.el.dataset.live = "ended"; })
    .catch((error) => {
      if (!isAbort(error)) progress.el.dataset.live = "lost";
    });
}
