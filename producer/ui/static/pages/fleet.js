// Fleet: work remaining, workers holding, desired and capacity over the last hour, and what workers report.
import { ApiError, api, every, probe } from "../api.js";
import { lineChart } from "../chart.js";
import { duration, h } from "../dom.js";

export const title = "Fleet";
const REFRESH_MS = 10000;

function figure(label, value, hint) {
  return h("div", { className: "figure" }, h("dt", {}, label), h("dd", {}, value === null || value === undefined ? "—" : String(value)), hint ? h("dd", { className: "muted" }, hint) : null);
}

function gib(bytes) {
  return (bytes / 2 ** 30).toFixed(1);
}

function gpuCells(w) {
  // Null figures are what the worker could not measure (a CPU worker, no NVML): its reason is shown, not a number.
  if (!w.gpu_name && w.utilization_ratio == null && w.memory_used_bytes == null) {
    return [h("td", { colSpan: 3, className: "muted" }, w.gpu_reason || "no GPU figures")];
  }
  const ratio = w.utilization_ratio;
  return [
    h("td", {}, w.gpu_name || "—"),
    h("td", {}, ratio == null ? "—" : h("meter", { min: 0, max: 1, value: ratio, "aria-label": `GPU utilization of ${w.id}` }),
      ratio == null ? null : ` ${Math.round(ratio * 100)}%`),
    h("td", {}, w.memory_used_bytes == null ? "—" : `${gib(w.memory_used_bytes)} / ${w.memory_total_bytes == null ? "?" : gib(w.memory_total_bytes)} GiB`),
  ];
}

function workersView(reported) {
  // GET /v1/fleet/workers: each live worker's last report (every few seconds; a silent worker drops out).
  if (!reported || !Array.isArray(reported.workers)) {
    return h("p", { className: "empty" }, "Worker reports are not available from this API.");
  }
  if (!reported.workers.length) {
    return h("p", { className: "empty" }, "No worker is reporting: none is running (scaled to zero), or none has booted yet.");
  }
  return h("div", { className: "table-wrap" }, h("table", { className: "workers" },
    h("thead", {}, h("tr", {}, ["Worker", "Machine", "Device", "GPU", "Utilization", "Memory", "Jobs running", "Idle for", "Retires in"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, reported.workers.map((w) => h("tr", { "data-worker": w.id },
      h("th", { scope: "row", className: "mono" }, w.id),
      h("td", {}, `${w.hostname} (${w.instance_type})`),
      h("td", { className: "mono" }, w.device),
      gpuCells(w),
      h("td", {}, String(w.jobs_running)),
      h("td", { className: "idle" }, w.jobs_running ? "busy" : duration(w.idle_s)),
      h("td", { className: "retires" }, w.retires_in_s == null ? "never" : duration(w.retires_in_s)))))));
}

export async function render(main, { signal }) {
  try {
    await api("/v1/scaling", { signal });
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 403)) throw error;
    main.append(h("h1", {}, "Fleet"), h("p", { className: "empty" },
      "The fleet is an operator's view: it needs an admin key. Your jobs' own figures are on the Jobs and Costs pages."));
    return;
  }
  const figures = h("dl", { className: "figures", "aria-live": "polite" });
  const chart = h("div");
  const workers = h("section", { "aria-labelledby": "w-h" });
  main.append(h("h1", {}, "Fleet"), figures,
    h("section", { "aria-labelledby": "hist-h" }, h("h2", { id: "hist-h" }, "The last hour"), chart),
    h("h2", { id: "w-h" }, "Workers"), workers);
  async function refresh() {
    const [scaling, history, reported] = await Promise.all([
      api("/v1/scaling", { signal }), api("/v1/fleet/history?minutes=60", { signal }), probe("/v1/fleet/workers")]);
    if (signal.aborted) return;
    figures.replaceChildren(
      figure("Work remaining", scaling.work_remaining, "pending + delayed + in flight + held by dead workers"),
      figure("Pending", scaling.pending), figure("In flight", scaling.in_flight), figure("Delayed", scaling.delayed),
      figure("Held by dead workers", scaling.dead_held), figure("Workers holding", scaling.workers_holding),
      figure("Desired workers", scaling.desired_workers, `${scaling.min_workers}–${scaling.max_workers}, ${scaling.worker_concurrency} per worker`));
    const s = history.samples;
    const now = Date.now() / 1000;
    const series = [
      { name: "work remaining", points: s.map((p) => [p.at, p.work_remaining]) },
      { name: "desired", points: s.map((p) => [p.at, p.desired]) },
      { name: "capacity", points: s.map((p) => [p.at, p.capacity]) },
      { name: "workers holding", points: s.map((p) => [p.at, p.workers_holding]) },
    ];
    if (!s.length) series[0].points = [[now, scaling.work_remaining]];
    chart.replaceChildren(lineChart(series, { label: "Work remaining, desired workers, capacity and workers holding over the last hour" }),
      s.length ? h("p", { className: "muted" }, `${s.length} samples from sdq controller, one every ${history.sample_s} s.`)
        : h("p", { className: "muted" }, "No history yet: sdq controller records a sample every 10 s (sdq up runs one)."));
    workers.replaceChildren(workersView(reported));
  }
  await refresh();
  every(REFRESH_MS, refresh, signal);
}
