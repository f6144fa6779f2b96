// The console's shell: the API key form and a hash router (#/models, #/models/NAME, #/jobs,
// #/jobs/ID, #/requests, #/audit). Hash routes keep every page on the one URL the server serves.

import { apiKey } from "./api.js";
import { h } from "./dom.js";
import { renderAudit } from "./pages/audit.js";
import { renderJob, renderJobs } from "./pages/jobs.js";
import { renderModel, renderModels } from "./pages/models.js";
import { renderRequests } from "./pages/requests.js";
import { isAbort, problemBox } from "./problem.js";

const ROUTES = [
  { pattern: /^\/models$/, page: "models", render: renderModels },
  { pattern: /^\/models\/([^/]+)$/, page: "model", render: renderModel },
  { pattern: /^\/jobs$/, page: "jobs", render: renderJobs },
  { pattern: /^\/jobs\/([^/]+)$/, page: "job", render: renderJob },
  { pattern: /^\/requests$/, page: "requests", render: renderRequests },
  { pattern: /^\/audit$/, page: "audit", render: renderAudit },
];

const main = document.getElementById("main");
let current = null; // the AbortController of the page on screen

function showKeyState() {
  const key = apiKey.get();
  document.getElementById("key-form").hidden = Boolean(key);
  document.getElementById("key-status").hidden = !key;
  document.getElementById("key-prefix").textContent = key ? `${key.slice(0, 12)}…` : "";
}

async function show() {
  current?.abort(); // stops the previous page's fetches and event streams
  const controller = (current = new AbortController());
  const [path, query = ""] = (window.location.hash.slice(1) || "/models").split("?");
  const route = ROUTES.find((r) => r.pattern.test(path));
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", path.startsWith(link.getAttribute("href").slice(1)));
  }
  // A page renders into a view of its own: one left behind by a quick navigation is detached.
  const view = h("div", { class: "view" });
  main.replaceChildren(view);
  main.dataset.page = route?.page ?? "none";
  main.dataset.state = "loading";
  if (!apiKey.get()) {
    view.append(h("p", { class: "hint", id: "need-key" }, "Paste an API key above to begin. It is kept in this tab only and sent as a Bearer header."));
    main.dataset.state = "ready";
    return;
  }
  if (!route) {
    view.append(h("p", null, "No such page."));
    main.dataset.state = "ready";
    return;
  }
  try {
    const args = route.pattern.exec(path).slice(1).map(decodeURIComponent); // URIError on a bad %
    await route.render(view, args, controller.signal, new URLSearchParams(query));
  } catch (error) {
    if (isAbort(error)) return;
    view.append(problemBox(error));
  }
  if (current === controller) main.dataset.state = "ready";
}

document.getElementById("key-form").addEventListener("submit", (event) => {
  event.preventDefault(); // never a real submission: the key must not reach a URL
  const input = document.getElementById("key-input");
  if (!input.value.trim()) return;
  apiKey.set(input.value);
  input.value = "";
  showKeyState();
  show();
});
document.getElementById("key-forget").addEventListener("click", () => {
  apiKey.clear();
  showKeyState();
  show();
});
window.addEventListener("hashchange", show);
showKeyState();
show();
