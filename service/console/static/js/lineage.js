// A model's version lineage as an SVG graph: each version a box, an arrow from its parent, the
// retired ones greyed with the reason, and below them the training data (data set versions) that
// each version links, joined by dashed lines.

import { s, when } from "./dom.js";

const NW = 160; // node width
const NH = 64;
const GAP_X = 56;
const GAP_Y = 22;
const PAD = 16;
const DATA_GAP = 56; // between the version lane and the training-data lane

/** Generation of each version: 0 for a root, parent's + 1 otherwise. */
function depths(versions) {
  const byNumber = new Map(versions.map((v) => [v.version, v]));
  const memo = new Map();
  const depth = (v, seen = new Set()) => {
    if (memo.has(v.version)) return memo.get(v.version);
    const parent = byNumber.get(v.parent_version);
    // A missing parent (not on the page) or a cycle (never expected) makes a root.
    const d = parent && !seen.has(parent.version) ? depth(parent, new Set([...seen, v.version])) + 1 : 0;
    memo.set(v.version, d);
    return d;
  };
  versions.forEach((v) => depth(v));
  return memo;
}

function layout(versions) {
  const depth = depths(versions);
  const rows = new Map(); // depth → next free row
  const pos = new Map();
  for (const v of [...versions].sort((a, b) => a.version - b.version)) {
    const d = depth.get(v.version);
    const row = rows.get(d) ?? 0;
    rows.set(d, row + 1);
    pos.set(v.version, { x: PAD + d * (NW + GAP_X), y: PAD + row * (NH + GAP_Y) });
  }
  return pos;
}

function datasetNodes(versions, pos, top) {
  const nodes = new Map(); // "name@version" → {dataset, version, linked: [x...]}
  for (const v of versions) {
    const t = v.training_data;
    if (!t) continue;
    const id = `${t.dataset}@${t.version}`;
    if (!nodes.has(id)) nodes.set(id, { id, dataset: t.dataset, version: t.version, xs: [] });
    nodes.get(id).xs.push(pos.get(v.version).x);
  }
  let right = -Infinity;
  const sorted = [...nodes.values()].sort((a, b) => Math.min(...a.xs) - Math.min(...b.xs) || a.version - b.version);
  for (const n of sorted) {
    n.x = Math.max(Math.min(...n.xs), right + 16);
    n.y = top;
    right = n.x + NW;
  }
  return nodes;
}

function versionNode(v, p, latest) {
  const retired = v.status === "retired";
  const classes = ["node", "version", `status-${v.status}`, v.version === latest ? "latest" : ""].join(" ").trim();
  const tip = [
    `version ${v.version} (${v.status})`,
    v.parent_version ? `parent: v${v.parent_version}` : "no parent (uploaded)",
    v.created_by_job ? `made by ${v.created_by_job}` : null,
    retired ? `retired ${when(v.retired_at)}: ${v.retired_reason}` : null,
    v.training_data ? `training data: ${v.training_data.dataset} v${v.training_data.version}` : null,
    `sha256 ${v.sha256}`,
    v.description,
  ].filter(Boolean).join("\n");
  const origin = v.created_by_job
    ? s("a", { href: `#/jobs/${encodeURIComponent(v.created_by_job)}`, class: "node-link" },
        s("text", { x: p.x + 10, y: p.y + 55 }, `${v.created_by_job.slice(0, 16)}…`))
    : s("text", { class: "node-sub", x: p.x + 10, y: p.y + 55 }, "uploaded");
  return s(
    "g",
    { class: classes, "data-version": v.version, "data-status": v.status, "data-retired-reason": v.retired_reason ?? undefined },
    s("title", null, tip),
    s("rect", { x: p.x, y: p.y, width: NW, height: NH, rx: 6 }),
    s("text", { class: "node-title", x: p.x + 10, y: p.y + 19 }, `v${v.version}`, v.version === latest ? " · latest" : ""),
    s("text", { class: "node-sub", x: p.x + 10, y: p.y + 37 }, retired ? `retired: ${v.retired_reason ?? "?"}` : v.status),
    origin,
  );
}

export function lineageGraph(versions, latest) {
  const pos = layout(versions);
  const versionsBottom = Math.max(...[...pos.values()].map((p) => p.y + NH));
  const data = datasetNodes(versions, pos, versionsBottom + DATA_GAP);
  const right = Math.max(...[...pos.values()].map((p) => p.x + NW), ...[...data.values()].map((n) => n.x + NW));
  const bottom = data.size ? versionsBottom + DATA_GAP + 44 : versionsBottom;
  const width = right + PAD;
  const height = bottom + PAD;
  const svg = s(
    "svg",
    { class: "lineage", width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "version lineage", "data-plot": "lineage" },
    s("defs", null, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
      s("path", { class: "arrow-head", d: "M0,0 L10,5 L0,10 z" }))),
  );
  for (const v of versions) {
    const from = pos.get(v.parent_version);
    if (!from) continue;
    const to = pos.get(v.version);
    const [x1, y1, x2, y2] = [from.x + NW, from.y + NH / 2, to.x, to.y + NH / 2];
    const mid = (x1 + x2) / 2;
    svg.append(s("path", { class: "edge", d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2 - 2},${y2}`, "marker-end": "url(#arrow)", "data-from": v.parent_version, "data-to": v.version }));
  }
  for (const v of versions) {
    const t = v.training_data;
    if (!t) continue;
    const p = pos.get(v.version);
    const n = data.get(`${t.dataset}@${t.version}`);
    svg.append(s("path", { class: "data-edge", d: `M${p.x + NW / 2},${p.y + NH} L${n.x + NW / 2},${n.y}`, "data-version": v.version }));
  }
  for (const n of data.values()) {
    svg.append(
      s("g", { class: "node dataset", "data-dataset": n.dataset, "data-dataset-version": n.version },
        s("title", null, `training data: data set ${n.dataset}, version ${n.version}`),
        s("rect", { x: n.x, y: n.y, width: NW, height: 44, rx: 14 }),
        s("text", { class: "node-title", x: n.x + 12, y: n.y + 18 }, n.dataset),
        s("text", { class: "node-sub", x: n.x + 12, y: n.y + 35 }, `data set v${n.version}`)),
    );
  }
  for (const v of versions) svg.append(versionNode(v, pos.get(v.version), latest));
  return svg;
}
