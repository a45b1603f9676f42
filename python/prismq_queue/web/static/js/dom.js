// Small DOM and formatting helpers.
//
// Everything the queue holds (payloads, errors, step names, worker ids) is user data: it is only
// ever inserted as text (textContent, text nodes), never parsed as HTML.

/** el("td", {class: "num", text: "3"}, child, ...): an element with text and children. */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = String(value);
    else if (key === "class") node.className = value;
    else if (key === "data") Object.entries(value).forEach(([k, v]) => (node.dataset[k] = String(v)));
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Replace a tbody's rows; show the "empty" note instead when there are none. */
export function fillTable(tableId, rows, emptyId) {
  const body = document.querySelector(`#${tableId} tbody`);
  body.replaceChildren(...rows);
  document.getElementById(tableId).hidden = rows.length === 0;
  if (emptyId) document.getElementById(emptyId).hidden = rows.length !== 0;
}

const numbers = new Intl.NumberFormat("en-US");

export function fmtInt(n) {
  return n === null || n === undefined ? "-" : numbers.format(n);
}

export function fmtPercent(p) {
  return p === null || p === undefined ? "" : `${Math.round(p)}%`;
}

// Server time minus browser time, measured from the server's responses: ages stay right when
// the two clocks disagree.
let skew = 0;
export function setServerNow(iso) {
  const t = Date.parse(iso);
  if (!Number.isNaN(t)) skew = t - Date.now();
}
export function serverNow() {
  return Date.now() + skew;
}

/** "4 s", "3 min", "2 h", "5 d": a duration in ms, short and rounded down. */
export function fmtDuration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d`;
}

/** How long ago a timestamp (ISO string or ms) was, e.g. "12 s ago". */
export function fmtAgo(ts) {
  const t = typeof ts === "number" ? ts : Date.parse(ts);
  if (Number.isNaN(t)) return "";
  const d = serverNow() - t;
  if (d < 1500) return "just now";
  return `${fmtDuration(d)} ago`;
}

/** A cell whose text is kept current by tickAges(): an age, or an elapsed time. */
export function ageCell(ts, { mode = "ago", cls = "num" } = {}) {
  const t = typeof ts === "number" ? ts : Date.parse(ts);
  const td = el("td", { class: cls, data: { ts: t, mode }, title: new Date(t).toLocaleString() });
  td.textContent = mode === "ago" ? fmtAgo(t) : fmtDuration(serverNow() - t);
  return td;
}

/** Refresh every age cell in place (rows are not rebuilt, so buttons and focus stay put). */
export function tickAges() {
  for (const node of document.querySelectorAll("[data-ts]")) {
    const t = Number(node.dataset.ts);
    node.textContent = node.dataset.mode === "ago" ? fmtAgo(t) : fmtDuration(serverNow() - t);
  }
}

export function badge(status, label) {
  return el("span", { class: `badge s-${status}`, text: label || status });
}

/** Pretty JSON as text, for a <pre>. */
export function json(value) {
  if (value === undefined) return "";
  try {
    return JSON.stringify(value, null, 2);
  } catch (e) {
    return String(value);
  }
}
