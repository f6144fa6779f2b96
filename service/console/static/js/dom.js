// Building DOM nodes without HTML strings: every value goes in as text or as an attribute, so
// nothing the API returns (a model description, an audit payload) can become markup or script.

const SVG_NS = "http://www.w3.org/2000/svg";

function build(el, attrs, children) {
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** An HTML element: h("a", {href: "#/jobs"}, "Jobs"). */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element, same signature. */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

/** A number for people: 3 decimals, or "—" when missing. */
export function num(value, digits = 3) {
  return typeof value === "number" && Number.isFinite(value) ? value.toFixed(digits) : "—";
}

export function pct(value) {
  return typeof value === "number" ? `${Math.round(value * 100)}%` : "—";
}

/** An ISO time as local "YYYY-MM-DD HH:MM:SS". */
export function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** A long id or hash cut for a table cell; the whole value stays in the title. */
export function short(text, n = 12) {
  if (!text) return "—";
  const t = String(text);
  return t.length > n ? h("span", { title: t }, `${t.slice(0, n)}…`) : t;
}

export function badge(status) {
  return h("span", { class: `badge status-${status}` }, status);
}

/**
 * A table (in a box that scrolls sideways when it is wider than the page) from column specs
 * [{label, cell: (row) => node|text, cls?}]; rowAttrs(row) → attributes of a row.
 */
export function table(columns, rows, { attrs = {}, rowAttrs = () => null } = {}) {
  return h("div", { class: "table-scroll" }, h(
    "table",
    attrs,
    h("thead", null, h("tr", null, columns.map((c) => h("th", { scope: "col" }, c.label)))),
    h(
      "tbody",
      null,
      rows.map((row) => h("tr", rowAttrs(row), columns.map((c) => h("td", { class: c.cls }, c.cell(row))))),
    ),
  ));
}

export function empty(text) {
  return h("p", { class: "empty" }, text);
}
