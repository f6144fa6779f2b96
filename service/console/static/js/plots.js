// Before/after plots as inline SVG. Colours and fonts come from console.css through classes, not
// style attributes (the Content-Security-Policy allows no inline styles).

import { num, s } from "./dom.js";

const W = 360;
const H = 220;
const M = { top: 50, right: 14, bottom: 40, left: 46 };
const IW = W - M.left - M.right;
const IH = H - M.top - M.bottom;
const SERIES = ["before", "after"];

/** A round upper bound for an axis: 1, 2 or 5 times a power of ten, at or above max. */
export function niceMax(max) {
  if (!(max > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(max));
  return [1, 2, 5, 10].map((f) => f * power).find((v) => v >= max);
}

function frame(id, title) {
  return s(
    "svg",
    { class: "plot", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title, "data-plot": id },
    s("title", null, title),
    s("text", { class: "plot-title", x: 12, y: 16 }, title),
  );
}

function yAxis(svg, yMax, format) {
  const y = (v) => M.top + IH - (v / yMax) * IH;
  // Steps of 0.25, 0.5 or 1 times a power of ten: 1 → 0.25s, 2 → 0.5s, 5 → 1s.
  const lead = Math.round(yMax / 10 ** Math.floor(Math.log10(yMax)));
  const n = lead === 5 ? 5 : 4;
  for (let i = 0; i <= n; i++) {
    const v = (yMax * i) / n;
    svg.append(
      s("line", { class: "grid", x1: M.left, x2: M.left + IW, y1: y(v), y2: y(v) }),
      s("text", { class: "tick", x: M.left - 6, y: y(v) + 4, "text-anchor": "end" }, format(v)),
    );
  }
  svg.append(s("line", { class: "axis", x1: M.left, x2: M.left, y1: M.top, y2: M.top + IH }));
  return y;
}

function legend(svg, names) {
  names.forEach((name, i) => {
    const x = M.left + i * 74;
    svg.append(
      s("rect", { class: `swatch series-${name}`, x, y: 23, width: 10, height: 10 }),
      s("text", { class: "legend", x: x + 14, y: 32 }, name),
    );
  });
}

/**
 * Grouped bars, one group per metric, one bar per series.
 * groups: [{key, label, values: {before, after}}]; refs: horizontal lines [{y, label, kind}].
 */
export function barChart({ id, title, groups, yMax, refs = [], series = SERIES }) {
  const svg = frame(id, title);
  const top = yMax ?? niceMax(Math.max(0, ...groups.flatMap((g) => series.map((k) => g.values[k] ?? 0))) * 1.1);
  const y = yAxis(svg, top, (v) => num(v, top >= 10 ? 0 : 2));
  const band = IW / groups.length;
  const barW = Math.min(46, (band * 0.7) / series.length);
  groups.forEach((g, gi) => {
    const x0 = M.left + gi * band + (band - barW * series.length) / 2;
    series.forEach((name, si) => {
      const value = g.values[name];
      const x = x0 + si * barW;
      if (typeof value !== "number" || !Number.isFinite(value)) {
        svg.append(s("text", { class: "bar-label", x: x + barW / 2, y: M.top + IH - 4, "text-anchor": "middle" }, "n/a"));
        return;
      }
      const v = Math.min(Math.max(value, 0), top);
      svg.append(
        s(
          "rect",
          {
            class: `bar series-${name}`, x, y: y(v), width: barW - 2, height: M.top + IH - y(v),
            "data-metric": g.key, "data-series": name, "data-value": value,
          },
          s("title", null, `${g.label} ${name}: ${num(value, 4)}`),
        ),
        s("text", { class: "bar-label", x: x + (barW - 2) / 2, y: y(v) - 4, "text-anchor": "middle" }, num(value, 2)),
      );
    });
    svg.append(s("text", { class: "group-label", x: M.left + gi * band + band / 2, y: H - M.bottom + 16, "text-anchor": "middle" }, g.label));
  });
  refs.forEach((ref, i) => {
    // Labels alternate ends and sides of their line: two close lines (chance, limit) stay legible.
    const [x, anchor, dy] = i % 2 ? [M.left + IW - 2, "end", -3] : [M.left + 4, "start", 11];
    svg.append(
      s("line", { class: `ref ref-${ref.kind}`, x1: M.left, x2: M.left + IW, y1: y(ref.y), y2: y(ref.y), "data-ref": ref.kind }),
      s("text", { class: `ref-label ref-${ref.kind}`, x, y: y(ref.y) + dy, "text-anchor": anchor }, ref.label),
    );
  });
  svg.append(s("line", { class: "axis", x1: M.left, x2: M.left + IW, y1: M.top + IH, y2: M.top + IH }));
  legend(svg, series);
  return svg;
}

// --- loss distributions -------------------------------------------------------------------------

function binLosses(forget, held, bins = 20) {
  const all = [...forget, ...held].filter(Number.isFinite);
  let lo = Math.min(...all);
  let hi = Math.max(...all);
  if (!(hi > lo)) hi = lo + 1;
  const edges = Array.from({ length: bins + 1 }, (_, i) => lo + ((hi - lo) * i) / bins);
  const count = (values) => {
    const out = new Array(bins).fill(0);
    for (const v of values) if (Number.isFinite(v)) out[Math.min(bins - 1, Math.floor(((v - lo) / (hi - lo)) * bins))]++;
    return out;
  };
  return { edges, forget: count(forget), eval: count(held) };
}

/**
 * The forget-vs-eval loss distribution in one metrics object M, when it carries one:
 * either per-sample losses (forget_losses, eval_losses) or a histogram
 * (loss_histogram = {edges, forget, eval}, counts per bin). Null when it has only the means.
 */
export function lossDistribution(m) {
  const hist = m?.loss_histogram;
  if (hist && Array.isArray(hist.edges) && Array.isArray(hist.forget) && Array.isArray(hist.eval)) return hist;
  if (Array.isArray(m?.forget_losses) && Array.isArray(m?.eval_losses)) return binLosses(m.forget_losses, m.eval_losses);
  return null;
}

/** Overlaid histograms of forget and eval losses, each normalised to fractions of its set. */
export function histogram({ id, title, dist }) {
  const svg = frame(id, title);
  const names = ["forget", "eval"];
  const frac = Object.fromEntries(
    names.map((n) => {
      const total = dist[n].reduce((a, b) => a + b, 0) || 1;
      return [n, dist[n].map((c) => c / total)];
    }),
  );
  const top = niceMax(Math.max(...names.flatMap((n) => frac[n])) * 1.05);
  const y = yAxis(svg, top, (v) => num(v, 2));
  const bins = dist.edges.length - 1;
  const bw = IW / bins;
  for (const n of names) {
    frac[n].forEach((f, i) => {
      if (f <= 0) return;
      svg.append(
        s("rect", {
          class: `hist series-${n}`, x: M.left + i * bw, y: y(f), width: Math.max(bw - 1, 1), height: M.top + IH - y(f),
          "data-series": n, "data-bin": i, "data-value": f,
        }),
      );
    });
  }
  const lo = dist.edges[0];
  const hi = dist.edges[bins];
  svg.append(
    s("line", { class: "axis", x1: M.left, x2: M.left + IW, y1: M.top + IH, y2: M.top + IH }),
    s("text", { class: "tick", x: M.left, y: H - M.bottom + 14, "text-anchor": "start" }, num(lo, 2)),
    s("text", { class: "tick", x: M.left + IW, y: H - M.bottom + 14, "text-anchor": "end" }, num(hi, 2)),
    s("text", { class: "group-label", x: M.left + IW / 2, y: H - M.bottom + 28, "text-anchor": "middle" }, "loss per sample (fraction of set)"),
  );
  legend(svg, names);
  return svg;
}

// --- the job page's plots -----------------------------------------------------------------------

const pick = (before, after, key) => ({ before: before?.[key], after: after?.[key] });

export function accuracyPlot(metrics) {
  const { before, after } = metrics;
  const groups = [
    { key: "forget_accuracy", label: "forget", values: pick(before, after, "forget_accuracy") },
    { key: "eval_accuracy", label: "eval", values: pick(before, after, "eval_accuracy") },
  ];
  const others = metrics.other_classes_eval;
  if (others) groups.push({ key: "other_classes_accuracy", label: "other classes", values: { before: others.before?.accuracy, after: others.after?.accuracy } });
  return barChart({ id: "accuracy", title: "Accuracy", groups, yMax: 1 });
}

/** Distributions of forget vs eval losses before and after when the metrics carry them; else the means. */
export function lossPlots(metrics) {
  const { before, after } = metrics;
  const dists = [
    ["before", lossDistribution(before)],
    ["after", lossDistribution(after)],
  ].filter(([, d]) => d);
  if (dists.length) {
    return dists.map(([when, dist]) => histogram({ id: `loss-distribution-${when}`, title: `Losses ${when}: forget vs eval`, dist }));
  }
  const groups = [
    { key: "forget_loss", label: "forget", values: pick(before, after, "forget_loss") },
    { key: "eval_loss", label: "eval", values: pick(before, after, "eval_loss") },
  ];
  return [barChart({ id: "loss", title: "Mean loss", groups })];
}

export function miaPlot(metrics) {
  const { before, after } = metrics;
  const refs = [{ y: 0.5, label: "chance 0.5", kind: "chance" }];
  const limit = metrics.policy?.checks?.forgetting?.mia_auc_limit;
  if (typeof limit === "number") refs.push({ y: limit, label: `limit ${num(limit, 2)}`, kind: "limit" });
  const groups = [{ key: "mia_auc", label: "loss attack, forget vs eval", values: pick(before, after, "mia_auc") }];
  return barChart({ id: "mia", title: "Membership inference (MIA) AUC", groups, yMax: 1, refs });
}
