// Jobs: a live table (status, progress, queue position/ETA, model, size, cost, age), filters and paging.
import { api, follow } from "../api.js";
import { age, field, h, jobProgress, setJobProgress, shortId, statusBadge, usd, duration } from "../dom.js";

export const title = "Jobs";
const STATUSES = ["", "queued", "running", "succeeded", "failed", "canceled"];
const SIZES = [25, 50, 100, 200, 500, 1000];
const WATCH_MAX = 200; // what one /v1/events stream takes

function hashFor(params) {
  const query = new URLSearchParams([...params].filter(([, v]) => v));
  const text = query.toString();
  return `#/jobs${text ? `?${text}` : ""}`;
}

async function load(params, signal) {
  const limit = Number(params.get("limit")) || 50;
  const batch = params.get("batch");
  const jobs = [];
  let next = null;
  if (batch) {
    let offset = Number(params.get("offset")) || 0;
    while (jobs.length < limit) {
      const page = await api(`/v1/batches/${encodeURIComponent(batch)}/items?offset=${offset}&limit=${Math.min(200, limit - jobs.length)}`, { signal });
      jobs.push(...page.jobs);
      if (page.next_offset === null || page.next_offset === undefined) { next = null; break; }
      offset = next = page.next_offset;
    }
    return { jobs, next: next === null ? null : ["offset", String(next)] };
  }
  let cursor = params.get("cursor");
  while (jobs.length < limit) {
    const query = new URLSearchParams({ limit: String(Math.min(200, limit - jobs.length)) });
    if (params.get("status")) query.set("status", params.get("status"));
    if (cursor) query.set("cursor", cursor);
    const page = await api(`/v1/jobs?${query}`, { signal });
    jobs.push(...page.jobs);
    cursor = page.next_cursor;
    if (!cursor) break;
  }
  return { jobs, next: cursor ? ["cursor", cursor] : null };
}

function queueText(job) {
  const parts = [];
  if (job.queue_position !== undefined && job.queue_position !== null) parts.push(`#${job.queue_position}`);
  if (job.eta_s !== undefined && job.eta_s !== null) parts.push(`~${duration(job.eta_s)}`);
  return parts.join(" · ") || (job.status === "queued" ? "queued" : "—");
}

function filters(params) {
  const status = h("select", { name: "status", id: "filter-status" },
    STATUSES.map((s) => h("option", { value: s, selected: params.get("status") === s || (!s && !params.get("status")) }, s || "any")));
  const model = h("input", { name: "model", id: "filter-model", type: "search", value: params.get("model") || "", placeholder: "any", autocomplete: "off" });
  const batch = h("input", { name: "batch", id: "filter-batch", type: "search", value: params.get("batch") || "", placeholder: "batch id", pattern: "[0-9a-f]{32}", autocomplete: "off" });
  const size = h("select", { name: "limit", id: "filter-limit" },
    SIZES.map((n) => h("option", { value: String(n), selected: String(n) === (params.get("limit") || "50") }, String(n))));
  const form = h("form", { className: "filters", role: "search", "aria-label": "Filter jobs" },
    field("Status", status), field("Model", model), field("Batch", batch), field("Per page", size),
    h("div", { className: "actions" }, h("button", { type: "submit" }, "Apply")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = hashFor(new URLSearchParams(new FormData(form)));
  });
  return form;
}

class Row {
  constructor(job) {
    this.link = h("a", { href: `#/job/${job.id}`, className: "mono" }, shortId(job.id));
    this.status = h("td");
    this.bar = jobProgress(job);
    this.queue = h("td");
    this.cost = h("td", { className: "num" });
    this.age = h("td", { className: "num" });
    this.prompt = h("td", { className: "prompt" });
    this.tr = h("tr", { "data-job": job.id },
      h("th", { scope: "row" }, this.link), this.status, h("td", {}, this.bar), this.queue,
      h("td", { className: "mono" }, job.request.model || "default"),
      h("td", { className: "num" }, `${job.request.width}×${job.request.height}${job.request.num_images > 1 ? ` ×${job.request.num_images}` : ""}`),
      this.cost, this.age, this.prompt);
    this.update(job);
  }

  update(job) {
    this.job = job;
    this.status.replaceChildren(statusBadge(job.status));
    setJobProgress(this.bar, job);
    this.queue.textContent = queueText(job);
    this.cost.textContent = job.cost ? usd(job.cost.total_usd) : "—";
    this.age.textContent = age(job.created_at);
    this.prompt.textContent = job.request.prompt;
    this.prompt.title = job.request.prompt;
  }

  progress(step, total) {
    this.job = { ...this.job, progress: { step, total } };
    setJobProgress(this.bar, this.job);
  }
}

export async function render(main, { params, signal }) {
  const model = params.get("model");
  const { jobs, next } = await load(params, signal);
  const started = performance.now();
  const shown = model ? jobs.filter((j) => j.request.model === model) : jobs;
  const rows = new Map();
  const body = h("tbody");
  const fragment = document.createDocumentFragment();
  for (const job of shown) {
    const row = new Row(job);
    rows.set(job.id, row);
    fragment.append(row.tr);
  }
  body.append(fragment);
  const empty = h("p", { className: "empty", hidden: shown.length > 0 }, "No jobs here yet. ", h("a", { href: "#/new" }, "Submit one"), ".");
  const table = h("table", { className: "jobs" },
    h("caption", { className: "visually-hidden" }, "Jobs, newest first; updates live"),
    h("thead", {}, h("tr", {}, ["Job", "Status", "Progress", "Queue", "Model", "Size", "Cost", "Age", "Prompt"].map((c) => h("th", { scope: "col" }, c)))),
    body);
  let older = null;
  if (next) {
    const query = new URLSearchParams(params);
    query.set(next[0], next[1]);
    older = hashFor(query);
  }
  const paging = h("nav", { className: "paging", "aria-label": "Pages of jobs" },
    params.get("cursor") || params.get("offset") ? h("a", { href: hashFor(new URLSearchParams([...params].filter(([k]) => k !== "cursor" && k !== "offset"))) }, "← Newest") : null,
    older ? h("a", { href: older, rel: "next" }, "Older →") : null);
  main.append(h("h1", {}, "Jobs"), filters(params), h("div", { className: "table-wrap" }, table), empty, paging);
  main.dataset.tableMs = String(Math.round(performance.now() - started));

  // One stream for the page: the unfinished jobs it shows, plus (first page, no batch) every new job.
  const live = !params.get("cursor") && !params.get("offset") && !params.get("batch");
  const watched = shown.filter((j) => !["succeeded", "failed", "canceled"].includes(j.status)).slice(0, WATCH_MAX).map((j) => j.id);
  const limit = Number(params.get("limit")) || 50;
  const wanted = (job) => (!params.get("status") || job.status === params.get("status")) && (!model || job.request.model === model);
  const ages = setInterval(() => rows.forEach((row) => { row.age.textContent = age(row.job.created_at); }), 5000);
  signal.addEventListener("abort", () => clearInterval(ages));
  if (!live && !watched.length) return;
  const path = `/v1/events?jobs=${watched.join(",")}${live ? "&recent=true" : ""}`;
  follow(path, (name, data) => {
    if (name === "job") {
      const row = rows.get(data.id);
      if (row) row.update(data);
      else if (live && wanted(data)) {
        const added = new Row(data);
        rows.set(data.id, added);
        body.prepend(added.tr);
        empty.hidden = true;
        while (rows.size > limit) {
          const last = body.lastElementChild;
          rows.delete(last.dataset.job);
          last.remove();
        }
      }
    } else if (name === "progress") {
      const row = rows.get(data.id);
      if (row) row.progress(data.step, data.total);
    }
  }, { signal, reconnect: () => live });
}
