// Building the page without ever parsing data as HTML: every string becomes a text node (textContent).

/** An element: `attrs` sets properties (`className`, `href`, `onclick`…) or, for `aria-*`/`data-*`/`for`, attributes. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "innerHTML" || name === "outerHTML") throw new Error("data is never parsed as HTML");
    if (name.startsWith("on") && typeof value === "function") el.addEventListener(name.slice(2), value);
    else if (name.includes("-") || name === "for" || name === "role" || name === "scope") el.setAttribute(name, String(value));
    else el[name] = value;
  }
  append(el, children);
  return el;
}

/** Appends children: nodes as they are, strings and numbers as text, arrays flattened, null skipped. */
export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

const SVG = "http://www.w3.org/2000/svg";

/** An SVG element with attributes (charts are drawn here, not in a library). */
export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) if (value !== undefined && value !== null) el.setAttribute(name, String(value));
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function usd(value) {
  if (value === null || value === undefined) return "—";
  if (value === 0) return "$0";
  return value < 0.01 ? `$${value.toPrecision(2)}` : `$${value.toFixed(value < 10 ? 3 : 2)}`;
}

export function seconds(value) {
  if (value === null || value === undefined) return "—";
  if (value < 1) return `${Math.round(value * 1000)} ms`;
  if (value < 120) return `${value.toFixed(value < 10 ? 2 : 1)} s`;
  return duration(value);
}

export function duration(s) {
  if (s === null || s === undefined) return "—";
  s = Math.max(0, Math.round(s));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

export function age(iso, now = Date.now()) {
  if (!iso) return "—";
  return duration((now - Date.parse(iso)) / 1000);
}

export function shortId(id) {
  return id ? id.slice(0, 8) : "—";
}

/** A <progress> for a job: determinate while running with steps, indeterminate while queued, full when done. */
export function jobProgress(job, label) {
  const bar = h("progress", { max: 1, "aria-label": label || `Progress of job ${shortId(job.id)}` });
  setJobProgress(bar, job);
  return bar;
}

export function setJobProgress(bar, job) {
  const p = job.progress;
  if (job.status === "succeeded") { bar.max = 1; bar.value = 1; }
  else if (p && p.total) { bar.max = p.total; bar.value = p.step; }
  else if (job.status === "running" || job.status === "queued") bar.removeAttribute("value");
  else { bar.max = 1; bar.value = 0; }
  bar.dataset.status = job.status;
  bar.title = p && p.total ? `step ${p.step} of ${p.total}` : job.status;
}

export function statusBadge(status) {
  return h("span", { className: `badge s-${status}` }, status);
}

/** A labelled form control: `<label for>` + control + an error slot the API's field errors go into. */
export function field(labelText, control, hint) {
  const id = control.id || (control.id = `f-${control.name}`);
  const error = h("p", { className: "field-error", id: `${id}-error`, "aria-live": "polite" });
  control.setAttribute("aria-describedby", hint ? `${id}-hint ${id}-error` : `${id}-error`);
  return h("div", { className: "field", "data-field": control.name },
    h("label", { for: id }, labelText), control,
    hint ? h("p", { className: "hint", id: `${id}-hint` }, hint) : null, error);
}
