// Deletion requests, searched by data subject (GET /v1/deletion-requests?subject=). The subject
// stays in the form, not in the page's URL: it is personal data and has no place in the history.

import { getJson } from "../api.js";
import { badge, empty, h, short, table, when } from "../dom.js";
import { isAbort, problemBox } from "../problem.js";

const enc = encodeURIComponent;

const columns = [
  { label: "Request", cell: (r) => h("code", null, short(r.id, 16)) },
  { label: "Model", cell: (r) => h("a", { href: `#/models/${enc(r.model)}` }, r.model) },
  { label: "Status", cell: (r) => badge(r.status) },
  { label: "Job", cell: (r) => (r.job_id ? h("a", { href: `#/jobs/${enc(r.job_id)}` }, short(r.job_id, 16)) : "—") },
  { label: "Method", cell: (r) => r.method ?? "—" },
  { label: "Samples", cell: (r) => r.n_samples ?? "—" },
  { label: "New version", cell: (r) => (r.result_version ? `v${r.result_version}` : "—") },
  { label: "Subject digest", cell: (r) => h("code", null, short(r.subject_digest, 12)) },
  { label: "Created", cell: (r) => when(r.created_at) },
];

export async function renderRequests(view, _args, signal) {
  const subject = h("input", { type: "search", id: "subject-input", placeholder: "the data subject's reference", autocomplete: "off", spellcheck: "false" });
  const model = h("input", { id: "requests-model", placeholder: "any model", autocomplete: "off" });
  const results = h("div", { id: "request-results", "aria-live": "polite" });
  const form = h("form", { class: "filters", id: "subject-form", role: "search" },
    h("label", null, "Subject ", subject), h("label", null, "Model ", model), h("button", { type: "submit" }, "Search"));

  async function search() {
    const who = subject.value.trim();
    results.replaceChildren(h("p", { class: "loading" }, "Searching…"));
    try {
      const page = await getJson("/v1/deletion-requests", { subject: who, model: model.value.trim(), limit: 100 }, signal);
      const heading = who ? `${page.items.length} request(s) for subject "${who}"` : "Newest requests";
      results.replaceChildren(
        h("p", { class: "meta", id: "request-count" }, heading),
        page.items.length
          ? table(columns, page.items, { attrs: { id: "requests-table" }, rowAttrs: (r) => ({ "data-request": r.id, "data-status": r.status }) })
          : empty(who ? "No deletion request names this subject." : "No deletion requests yet."),
      );
      results.dataset.subject = who;
    } catch (error) {
      if (!isAbort(error)) results.replaceChildren(problemBox(error));
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    search();
  });
  view.append(
    h("h2", null, "Deletion requests"),
    h("p", { class: "hint" }, "Subjects are stored only as keyed digests: the search sends the reference you type and the service compares digests."),
    form,
    results,
  );
  await search();
}
