// Batches: progress bars, counts by status, ETA, cost so far, cancel, and a link to their jobs.
import { api, every } from "../api.js";
import { age, duration, h, shortId, usd } from "../dom.js";

export const title = "Batches";
const STATUSES = ["queued", "running", "succeeded", "failed", "canceled"];

function card(batch, onCancel) {
  const bar = h("progress", { max: batch.total, value: batch.total - batch.counts.queued - batch.counts.running, "aria-label": `Batch ${shortId(batch.id)} progress` });
  const cancel = h("button", { type: "button", className: "danger", disabled: batch.status === "completed" || batch.cancel_requested, "aria-label": `Cancel batch ${shortId(batch.id)}` }, "Cancel");
  cancel.addEventListener("click", () => onCancel(batch, cancel));
  const eta = batch.eta_s !== undefined && batch.eta_s !== null ? `ETA ~${duration(batch.eta_s)}` : null;
  const done = batch.counts.succeeded + batch.counts.failed + batch.counts.canceled;
  return h("article", { className: "batch", "data-batch": batch.id },
    h("header", {}, h("h2", {}, "Batch ", h("span", { className: "mono" }, shortId(batch.id))),
      h("span", { className: `badge s-${batch.status === "completed" ? "succeeded" : "running"}` }, batch.status)),
    bar,
    h("p", { className: "done" }, `${done} of ${batch.total} done (${Math.round(batch.progress * 100)}%)`, eta ? ` · ${eta}` : ""),
    h("ul", { className: "counts", "aria-label": "Jobs by status" }, STATUSES.map((s) => h("li", { "data-status": s }, h("span", { className: `badge s-${s}` }, s), ` ${batch.counts[s]}`))),
    h("p", {}, `Cost so far ${usd(batch.cost_usd)} · created ${age(batch.created_at)} ago${batch.cancel_requested ? " · cancel requested" : ""}`),
    Object.keys(batch.metadata || {}).length ? h("p", { className: "muted" }, Object.entries(batch.metadata).map(([k, v]) => `${k}=${v}`).join(", ")) : null,
    h("div", { className: "actions" }, h("a", { href: `#/jobs?batch=${batch.id}` }, `Jobs of batch ${shortId(batch.id)}`), cancel));
}

export async function render(main, { signal, notify }) {
  const list = h("div", { className: "batches" });
  main.append(h("h1", {}, "Batches"), list);
  const cancel = async (batch, button) => {
    button.disabled = true;
    try {
      await api(`/v1/batches/${batch.id}/cancel`, { method: "POST" });
      notify(`Batch ${shortId(batch.id)}: cancel requested.`);
      await refresh();
    } catch (error) { notify(error.message, "error"); button.disabled = false; }
  };
  async function refresh() {
    const page = await api("/v1/batches?limit=20", { signal });
    if (signal.aborted) return;
    // Keep keyboard focus across the refresh: the same control of the same batch.
    const active = document.activeElement;
    const holder = active && list.contains(active) ? active.closest("[data-batch]") : null;
    const focused = holder ? [holder.dataset.batch, [...holder.querySelectorAll("a, button")].indexOf(active)] : null;
    list.replaceChildren(...(page.batches.length ? page.batches.map((b) => card(b, cancel)) : [h("p", { className: "empty" }, "No batches yet: submit one with `sdq batch` or POST /v1/batches.")]));
    if (focused) {
      const again = [...list.querySelectorAll("[data-batch]")].find((el) => el.dataset.batch === focused[0]);
      again?.querySelectorAll("a, button")[focused[1]]?.focus();
    }
    return page;
  }
  await refresh();
  // Counts change without an event per batch: a modest refresh, quicker while something runs.
  every(3000, async () => { await refresh(); }, signal).catch(() => {});
}
