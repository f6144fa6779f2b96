// How a failed call looks: the API's problem+json title and detail, as the API wrote them (a key
// without the scope reads "this API key lacks the 'audit:read' scope").

import { ApiError } from "./api.js";
import { h } from "./dom.js";

export function problemBox(error) {
  if (error instanceof ApiError) {
    const p = error.problem;
    return h(
      "div",
      { class: "problem", role: "alert", "data-status": error.status },
      h("strong", null, `${error.status} ${p.title ?? "Error"}`),
      p.detail ? h("p", { class: "problem-detail" }, p.detail) : null,
    );
  }
  return h("div", { class: "problem", role: "alert" }, h("strong", null, "Error"), h("p", { class: "problem-detail" }, String(error?.message ?? error)));
}

export const isAbort = (error) => error?.name === "AbortError";
