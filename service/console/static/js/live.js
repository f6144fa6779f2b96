// Live job progress: a progress bar that follows GET /v1/jobs/{id}/events.

import { followEvents } from "./sse.js";
import { h, pct } from "./dom.js";

export const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

export function progressView(job) {
  const bar = h("progress", { max: 1, value: job.progress });
  const label = h("span", { class: "progress-label" });
  const el = h("span", { class: "progress", "data-job": job.id }, bar, label);
  const update = (snap) => {
    bar.value = snap.progress;
    label.textContent = `${pct(snap.progress)}${snap.stage ? ` · ${snap.stage}` : ""}`;
    el.dataset.status = snap.status;
  };
  update(job);
  return { el, update };
}

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });

/**
 * Calls onSnapshot(job) for every change of the job until it ends; resolves with the last one.
 * The server closes a stream after a time bound ("timeout" event): then it is opened again.
 */
export async function follow(jobId, onSnapshot, signal) {
  let last = null;
  while (!signal.aborted) {
    await followEvents(`/v1/jobs/${encodeURIComponent(jobId)}/events`, (event) => {
      if (event.type === "progress") {
        last = event.data;
        onSnapshot(event.data);
      }
    }, signal);
    if (last && TERMINAL.has(last.status)) return last;
    await sleep(1000, signal);
  }
  return last;
}
