// The audit log, filtered by model, action and time, and a button that recomputes the hash chain
// on the server (GET /v1/audit/verify) and says where it breaks.

import { getJson } from "../api.js";
import { empty, h, short, table, when } from "../dom.js";
import { isAbort, problemBox } from "../problem.js";

const ACTIONS = [
  "model.created", "version.created", "deletion.requested", "job.started", "job.succeeded", "job.failed",
  "versions.retired", "dataset.samples_erased", "checkpoint.downloaded", "key.created",
];

function payloadCell(payload) {
  const text = JSON.stringify(payload);
  return h("details", null, h("summary", null, text.length > 60 ? `${text.slice(0, 60)}…` : text), h("pre", null, JSON.stringify(payload, null, 2)));
}

const columns = [
  { label: "Seq", cell: (e) => e.seq },
  { label: "Time", cell: (e) => when(e.ts), cls: "nowrap" },
  { label: "Actor", cell: (e) => short(e.actor, 16), cls: "nowrap" },
  { label: "Action", cell: (e) => h("code", null, e.action), cls: "nowrap" },
  { label: "Model", cell: (e) => e.model ?? "—" },
  { label: "Object", cell: (e) => short(e.object_id, 14), cls: "nowrap" },
  { label: "Payload", cell: (e) => payloadCell(e.payload), cls: "payload" },
  { label: "Hash", cell: (e) => h("code", null, short(e.hash, 10)) },
];

function verdictView(v) {
  if (v.ok) {
    const signed = v.signed_head ? `; last signed head at seq ${v.signed_head.seq} (${v.signed_head.signed_at})` : "";
    return h("p", { class: "verdict ok", "data-ok": "true" }, h("strong", null, "ok"), ` — ${v.length} events, head ${v.head_hash.slice(0, 16)}…${signed}`);
  }
  return h(
    "p",
    { class: "verdict bad", "data-ok": "false", "data-first-bad-seq": v.first_bad_seq ?? "" },
    h("strong", null, `chain breaks at seq ${v.first_bad_seq ?? "?"}`),
    v.reason ? ` — ${v.reason}` : "",
    ` (${v.length} events check out before it)`,
  );
}

export async function renderAudit(view, _args, signal) {
  const model = h("input", { id: "audit-model", placeholder: "any model", autocomplete: "off" });
  const action = h("input", { id: "audit-action", list: "audit-actions", placeholder: "any action", autocomplete: "off" });
  const since = h("input", { id: "audit-since", type: "datetime-local", step: 1 });
  const form = h("form", { class: "filters", id: "audit-filters" },
    h("label", null, "Model ", model), h("label", null, "Action ", action), h("label", null, "Since ", since),
    h("datalist", { id: "audit-actions" }, ACTIONS.map((a) => h("option", { value: a }))),
    h("button", { type: "submit" }, "Apply"));
  const verify = h("button", { type: "button", id: "verify-button" }, "Verify chain");
  const verdict = h("div", { id: "verify-result", role: "status", "aria-live": "polite" });
  const results = h("div", { id: "audit-results" });
  const more = h("button", { type: "button", id: "audit-more", hidden: true }, "Load more");
  let rows = [];
  let cursor = null;
  let badSeq = null;

  const filters = () => ({
    model: model.value.trim(),
    action: action.value.trim(),
    // datetime-local is the viewer's local time; the API wants an absolute ISO time.
    since: since.value ? new Date(since.value).toISOString() : "",
  });

  function draw() {
    results.replaceChildren(
      rows.length
        ? table(columns, rows, { attrs: { id: "audit-table" }, rowAttrs: (e) => ({ "data-seq": e.seq, "data-action": e.action, "data-object": e.object_id, class: e.seq === badSeq ? "bad-row" : null }) })
        : empty("No events match."),
    );
    more.hidden = !cursor;
  }

  async function load(append) {
    results.dataset.state = "loading"; // "ready" again once this answer is drawn
    try {
      const page = await getJson("/v1/audit", { ...filters(), limit: 100, cursor: append ? cursor : null }, signal);
      rows = append ? [...rows, ...page.items] : page.items;
      cursor = page.next_cursor;
      draw();
    } catch (error) {
      if (isAbort(error)) return;
      more.hidden = true;
      results.replaceChildren(problemBox(error));
    }
    results.dataset.state = "ready";
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    load(false);
  });
  more.addEventListener("click", () => load(true));
  verify.addEventListener("click", async () => {
    verify.disabled = true;
    verdict.replaceChildren(h("p", { class: "loading" }, "Verifying…"));
    try {
      const v = await getJson("/v1/audit/verify", {}, signal);
      badSeq = v.ok ? null : v.first_bad_seq;
      verdict.replaceChildren(verdictView(v));
      draw();
    } catch (error) {
      if (!isAbort(error)) verdict.replaceChildren(problemBox(error));
    } finally {
      verify.disabled = false;
    }
  });

  view.append(h("h2", null, "Audit log"), form, h("div", { class: "verify" }, verify, verdict), results, more);
  await load(false);
}
