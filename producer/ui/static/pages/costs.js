// Costs: the daily bill as a chart (busy vs cold starts + idle), cost per job and utilization.
import { ApiError, api, every } from "../api.js";
import { barChart } from "../chart.js";
import { h, seconds, usd } from "../dom.js";

export const title = "Costs";
const DAYS = 14;
const REFRESH_MS = 10000;

function isoDay(offset) {
  const d = new Date();
  d.setUTCDate(d.getUTCDate() - offset);
  return d.toISOString().slice(0, 10);
}

export async function render(main, { signal }) {
  const today = h("dl", { className: "figures", "aria-live": "polite" });
  const chart = h("div");
  const lines = h("div");
  main.append(h("h1", {}, "Costs"), h("h2", {}, "Today (UTC)"), today,
    h("section", { "aria-labelledby": "bill-h" }, h("h2", { id: "bill-h" }, `The last ${DAYS} days`), chart),
    h("section", { "aria-labelledby": "lines-h" }, h("h2", { id: "lines-h" }, "Today by instance type"), lines));
  const past = new Map(); // final days never change: read once
  try {
    await api(`/v1/costs?day=${isoDay(0)}`, { signal });
  } catch (error) {
    // The fleet's bill is an admin view; a tenant key sees what its own jobs cost (GET /v1/costs/tenant).
    if (error instanceof ApiError && error.status === 403) return renderTenant(main, { signal });
    throw error;
  }
  async function refresh() {
    const days = [];
    for (let i = DAYS - 1; i >= 0; i--) days.push(isoDay(i));
    const bills = await Promise.all(days.map((day) => past.get(day) || api(`/v1/costs?day=${day}`, { signal })));
    if (signal.aborted) return;
    bills.forEach((b) => { if (b.final) past.set(String(b.day), b); });
    const now = bills[bills.length - 1];
    const figure = (label, value) => h("div", { className: "figure" }, h("dt", {}, label), h("dd", {}, value));
    today.replaceChildren(
      figure("Fleet (the bill)", usd(now.fleet_usd)), figure("Running jobs", usd(now.gpu_usd)),
      figure("Cold starts + idle", usd(now.overhead_usd)),
      figure("Utilization", now.utilization === null ? "—" : `${Math.round(now.utilization * 100)}%`),
      figure("Jobs", String(now.jobs)), figure("Per job", usd(now.usd_per_job)));
    chart.replaceChildren(barChart(bills.map((b) => ({ label: String(b.day).slice(5), parts: [b.gpu_usd, b.overhead_usd] })),
      ["running jobs", "cold starts + idle"], { label: `GPU cost per UTC day, last ${DAYS} days`, yFormat: usd }));
    lines.replaceChildren(now.lines.length ? h("div", { className: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Instance", "Capacity", "Rate", "Uptime", "Busy", "Bill", "Running jobs"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, now.lines.map((l) => h("tr", {}, h("th", { scope: "row" }, l.instance_type), h("td", {}, l.capacity),
        h("td", {}, l.usd_per_hour === null ? "unpriced" : `${usd(l.usd_per_hour)}/h`), h("td", {}, seconds(l.uptime_s)),
        h("td", {}, seconds(l.busy_s)), h("td", {}, usd(l.fleet_usd)), h("td", {}, usd(l.gpu_usd)))))))
      : h("p", { className: "empty" }, "No worker has reported uptime today."),
      now.unpriced_instance_types.length ? h("p", { className: "muted" }, `Not in the price table (SDQ_PRICES): ${now.unpriced_instance_types.join(", ")}`) : null);
  }
  await refresh();
  every(REFRESH_MS, refresh, signal);
}

/** A tenant key's view: its own jobs' share of the bill, per UTC day. */
async function renderTenant(main, { signal }) {
  const today = h("dl", { className: "figures", "aria-live": "polite" });
  const chart = h("div");
  main.replaceChildren(h("h1", {}, "Costs"),
    h("p", { className: "muted" }, "What your jobs cost: their share of the fleet's bill (the whole bill needs an admin key)."),
    h("h2", {}, "Today (UTC)"), today,
    h("section", { "aria-labelledby": "bill-h" }, h("h2", { id: "bill-h" }, `The last ${DAYS} days`), chart));
  const past = new Map();
  async function refresh() {
    const days = [];
    for (let i = DAYS - 1; i >= 0; i--) days.push(isoDay(i));
    const bills = await Promise.all(days.map((day) => past.get(day) || api(`/v1/costs/tenant?day=${day}`, { signal })));
    if (signal.aborted) return;
    bills.forEach((b) => { if (b.final) past.set(String(b.day), b); });
    const now = bills[bills.length - 1];
    const figure = (label, value) => h("div", { className: "figure" }, h("dt", {}, label), h("dd", {}, value));
    today.replaceChildren(figure("Your jobs", usd(now.total_usd)), figure("Running them", usd(now.gpu_usd)),
      figure("Share of cold starts + idle", usd(now.overhead_usd)), figure("Jobs", String(now.jobs)),
      figure("GPU time", seconds(now.gpu_s)));
    chart.replaceChildren(barChart(bills.map((b) => ({ label: String(b.day).slice(5), parts: [b.gpu_usd, b.overhead_usd] })),
      ["running jobs", "share of cold starts + idle"], { label: `Your jobs' cost per UTC day, last ${DAYS} days`, yFormat: usd }));
  }
  await refresh();
  every(REFRESH_MS, refresh, signal);
}
