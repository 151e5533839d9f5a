// One job: images with download links, request and seed with "run again" and "cancel", a timing waterfall, the
// cost split, warnings and error, and webhook deliveries with a redeliver button.
import { api, follow } from "../api.js";
import { waterfall } from "../chart.js";
import { age, h, jobProgress, seconds, setJobProgress, shortId, statusBadge, usd } from "../dom.js";

export const title = "Job";
const TERMINAL = new Set(["succeeded", "failed", "canceled"]);
const PHASES = [["queue wait", "queue_wait_s"], ["load", "load_s"], ["inference", "inference_s"], ["encode", "encode_s"], ["upload", "upload_s"]];

function definitions(pairs) {
  return h("dl", { className: "pairs" }, pairs.filter(([, v]) => v !== undefined && v !== null && v !== "").flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function requestView(request) {
  const loras = (request.loras || []).map((l) => `${l.name} × ${l.scale}`).join(", ");
  const metadata = Object.entries(request.metadata || {});
  return h("section", { "aria-labelledby": "req-h" },
    h("h2", { id: "req-h" }, "Request"),
    h("p", { className: "prompt-full" }, request.prompt),
    definitions([
      ["Negative prompt", request.negative_prompt],
      ["Model", request.model],
      ["Size", `${request.width}×${request.height}`],
      ["Steps", request.steps],
      ["Guidance", request.guidance_scale],
      ["Seed", request.seed],
      ["Images", request.num_images],
      ["Scheduler", request.scheduler],
      ["Format", request.output_format],
      ["LoRAs", loras],
      ["Webhook", request.webhook_url],
    ]),
    metadata.length ? h("div", {}, h("h3", {}, "Metadata"), definitions(metadata)) : null);
}

function outputsView(job) {
  if (!job.outputs.length) return h("p", { className: "empty" }, TERMINAL.has(job.status) ? "No images." : "Images appear here when the job is done.");
  return h("div", { className: "outputs" }, job.outputs.map((o, i) => h("figure", {},
    o.url ? h("img", { src: o.url, alt: `Image ${i + 1} of job ${shortId(job.id)}, seed ${o.seed}`, width: o.width, height: o.height }) : h("p", {}, "No download link (storage cannot presign)."),
    h("figcaption", {}, `seed ${o.seed} · ${o.width}×${o.height} · ${(o.bytes / 1024).toFixed(1)} KB `,
      o.url ? h("a", { href: o.url, download: "", rel: "noopener" }, `Download image ${i + 1}`) : null))));
}

function inputsView(job) {
  // Image inputs (img2img, inpainting, ControlNet, IP-Adapter), in the request's order. Each is shown through the
  // presigned link the API put in `inputs` (the prepared image once the job succeeded, else the upload); an https
  // input not prepared yet shows from its own URL. Without a link it is named, by its upload id.
  const r = job.request;
  const refs = [["image", "image", r.image], ["mask", "mask_image", r.mask_image],
    ...(r.controlnets || []).map((c, i) => [`controlnet ${i + 1}`, `controlnets.${i}.image`, c && c.image]),
    ["ip-adapter", "ip_adapter.image", r.ip_adapter && r.ip_adapter.image]].filter(([, , ref]) => ref);
  if (!refs.length) return null;
  const linked = new Map((job.inputs || []).filter((i) => i && i.url).map((i) => [i.field, i.url]));
  return h("section", { "aria-labelledby": "in-h" }, h("h2", { id: "in-h" }, "Input images"),
    h("div", { className: "outputs inputs" }, refs.map(([role, fieldName, ref]) => {
      const url = linked.get(fieldName) || (ref.url && /^(https:|data:image\/)/.test(ref.url) ? ref.url : null);
      const caption = h("figcaption", {}, role, ref.upload ? ` (upload ${ref.upload})` : "");
      const picture = url ? h("img", { src: url, alt: `Input ${role} of job ${shortId(job.id)}`, className: "input-image" }) : null;
      if (picture) {
        picture.addEventListener("error", () => picture.replaceWith(h("p", { className: "muted" }, "This input is no longer stored.")), { once: true });
      }
      return h("figure", {}, picture, caption);
    })));
}

function timingView(job) {
  const t = job.timings || {};
  const phases = PHASES.map(([name, key]) => ({ name, s: t[key] }));
  const cost = job.cost;
  return h("section", { "aria-labelledby": "time-h" },
    h("h2", { id: "time-h" }, "Where the time and money went"),
    waterfall(phases, { label: `Timing of job ${shortId(job.id)}`, format: seconds }),
    definitions([
      ["Batch size", t.batch_size],
      ["Attempts", job.attempts],
      ["Hand-offs", job.handoffs || null],
      ["Worker", job.worker],
      ["Started", job.started_at ? `${age(job.started_at)} ago` : null],
      ["Finished", job.finished_at ? `${age(job.finished_at)} ago` : null],
    ]),
    cost ? definitions([
      ["GPU time", seconds(cost.gpu_s)],
      ["GPU cost", usd(cost.gpu_usd)],
      ["Share of cold starts and idle", usd(cost.overhead_usd)],
      ["Total", `${usd(cost.total_usd)}${cost.final ? "" : " (so far: today's overhead share still changes)"}`],
      ["Instance", `${cost.instance_type} (${cost.capacity})`],
    ]) : h("p", { className: "empty" }, "No cost yet: a worker has not recorded GPU time for this job."));
}

function problemsView(job) {
  const parts = [];
  if (job.error) parts.push(h("div", { className: "error", role: "alert" }, h("strong", {}, job.error.code), ": ", job.error.message));
  if (job.warnings.length) parts.push(h("ul", { className: "warnings", "aria-label": "Warnings" }, job.warnings.map((w) => h("li", {}, w))));
  return parts.length ? h("section", { "aria-labelledby": "prob-h" }, h("h2", { id: "prob-h" }, "Warnings and errors"), parts) : null;
}

async function deliveriesView(job, notify, signal) {
  const box = h("section", { "aria-labelledby": "hook-h" }, h("h2", { id: "hook-h" }, "Webhook deliveries"));
  if (!job.request.webhook_url) { box.append(h("p", { className: "empty" }, "This job has no webhook.")); return box; }
  let list;
  try { list = await api(`/v1/jobs/${job.id}/deliveries`, { signal }); } catch (error) { box.append(h("p", { className: "error" }, error.message)); return box; }
  if (!list.deliveries.length) { box.append(h("p", { className: "empty" }, "No deliveries yet.")); return box; }
  const rows = list.deliveries.map((d) => {
    const button = h("button", { type: "button", disabled: d.state === "pending", "aria-label": `Redeliver ${d.type}` }, "Redeliver");
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await api(`/v1/jobs/${job.id}/deliveries/${encodeURIComponent(d.id)}/redeliver`, { method: "POST" });
        notify(`${d.type} queued for redelivery`);
      } catch (error) { notify(error.message, "error"); button.disabled = false; }
    });
    const attempts = h("ol", { className: "attempts" }, d.attempts.map((a) => h("li", {},
      `${new Date(a.at).toLocaleTimeString()} · ${a.status_code ?? "no answer"} · ${Math.round(a.duration_ms)} ms`, a.error ? ` · ${a.error}` : "")));
    return h("tr", {}, h("th", { scope: "row" }, d.type), h("td", {}, statusBadge(d.state)), h("td", { className: "mono" }, d.url), h("td", {}, attempts), h("td", {}, button));
  });
  box.append(h("div", { className: "table-wrap" }, h("table", {},
    h("thead", {}, h("tr", {}, ["Event", "State", "URL", "Attempts", ""].map((c) => h("th", { scope: "col" }, c)))), h("tbody", {}, rows))));
  return box;
}

export async function render(main, { arg, signal, go, notify }) {
  let job = await api(`/v1/jobs/${encodeURIComponent(arg || "")}`, { signal });
  const badge = h("span");
  const bar = jobProgress(job, "Progress");
  const step = h("span", { className: "muted" });
  const cancel = h("button", { type: "button", className: "danger" }, "Cancel");
  const again = h("button", { type: "button" }, "Run again (same seed)");
  const fresh = h("button", { type: "button" }, "Run again (new seed)");
  const body = h("div", { className: "job-body" });
  const header = h("header", { className: "job-head" },
    h("h1", {}, "Job ", h("span", { className: "mono" }, shortId(job.id))), badge, bar, step,
    h("div", { className: "actions" }, cancel, again, fresh));
  main.append(header, body);

  async function draw() {
    badge.replaceChildren(statusBadge(job.status));
    setJobProgress(bar, job);
    step.textContent = job.progress ? `step ${job.progress.step} of ${job.progress.total}` : job.status;
    cancel.disabled = TERMINAL.has(job.status) || job.cancel_requested;
    const parts = [h("section", { "aria-labelledby": "out-h" }, h("h2", { id: "out-h" }, "Images"), outputsView(job)),
      inputsView(job), problemsView(job), requestView(job.request), timingView(job)];
    body.replaceChildren(...parts.filter(Boolean));
    body.append(await deliveriesView(job, notify, signal));
    if (job.batch_id) body.append(h("p", {}, "Part of batch ", h("a", { href: `#/jobs?batch=${job.batch_id}` }, shortId(job.batch_id)), "."));
  }

  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try {
      job = await api(`/v1/jobs/${job.id}/cancel`, { method: "POST" });
      notify(TERMINAL.has(job.status) ? "Job canceled." : "Cancel requested: the job stops at its next step.");
      draw();
    } catch (error) { notify(error.message, "error"); cancel.disabled = false; }
  });
  const rerun = (keepSeed) => async () => {
    const request = { ...job.request };
    if (!keepSeed) delete request.seed;
    try {
      const created = await api("/v1/jobs", { method: "POST", body: request });
      go(`#/job/${created.id}`);
    } catch (error) { notify(error.message, "error"); }
  };
  again.addEventListener("click", rerun(true));
  fresh.addEventListener("click", rerun(false));
  await draw();
  if (TERMINAL.has(job.status)) return;
  const stop = new AbortController();
  signal.addEventListener("abort", () => stop.abort());
  follow(`/v1/events?jobs=${job.id}`, (name, data) => {
    if (name === "job") {
      job = data;
      draw();
      if (TERMINAL.has(job.status)) stop.abort();
    } else if (name === "progress") {
      job = { ...job, progress: { step: data.step, total: data.total } };
      setJobProgress(bar, job);
      step.textContent = `step ${data.step} of ${data.total}`;
    }
  }, { signal: stop.signal });
}
