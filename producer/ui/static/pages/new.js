// New job: a form over the request's fields and the API's limits; the API's 422 field errors appear beside them.
// With a model catalog (GET /v1/models answering 200) the model is a choice that brings its defaults and limits,
// and the ControlNet and IP-Adapter sections of the models that list some (adapters.js).
import { adapterSections, isAdapterField } from "../adapters.js";
import { api, probe } from "../api.js";
import { field, h } from "../dom.js";
import { imageDrop } from "../drop.js";

export const title = "New job";
const SCHEDULERS = ["default", "ddim", "euler", "euler_a", "dpmpp_2m", "unipc", "pndm"];
const FORMATS = ["png", "jpeg", "webp"];
const MAX_LORAS = 4;

function number(name, value, { min, max, step = 1, required = false } = {}) {
  return h("input", { name, id: `f-${name}`, type: "number", value: value ?? "", min, max, step, required, inputMode: step === 1 ? "numeric" : "decimal" });
}

function catalogModels(catalog) {
  let list = Array.isArray(catalog) ? catalog : catalog && (catalog.models || catalog.data);
  if (list && !Array.isArray(list) && typeof list === "object") list = Object.entries(list).map(([id, m]) => ({ id, ...m }));
  return Array.isArray(list) ? list.map((m) => (typeof m === "string" ? { id: m } : { ...m, id: m.id || m.name })).filter((m) => m.id) : [];
}

function loraRow(index) {
  const name = h("input", { name: `loras.${index}.name`, id: `f-lora-${index}-name`, type: "text", autocomplete: "off" });
  const scale = h("input", { name: `loras.${index}.scale`, id: `f-lora-${index}-scale`, type: "number", min: -4, max: 4, step: 0.05, value: 1 });
  return h("fieldset", { className: "lora" }, h("legend", {}, `LoRA ${index + 1}`), field("Name", name), field("Scale", scale));
}

export async function render(main, { go, notify, signal, params }) {
  const catalog = await probe("/v1/models");
  const models = catalogModels(catalog);
  // "server default" is the server's SDQ_DEFAULT_MODEL, whose lists the sections then show.
  const chosenModel = () => models.find((m) => m.id === (model.value || (catalog && catalog.default_model)));
  const adapters = adapterSections();
  const model = models.length
    ? h("select", { name: "model", id: "f-model" }, h("option", { value: "" }, "server default"), models.map((m) => h("option", { value: m.id }, m.title || m.id)))
    : h("input", { name: "model", id: "f-model", type: "text", placeholder: "server default", autocomplete: "off", spellcheck: false });
  const prompt = h("textarea", { name: "prompt", id: "f-prompt", required: true, maxLength: 2000, rows: 3 });
  prompt.value = params.get("prompt") || "";
  const controls = {
    prompt,
    negative_prompt: h("textarea", { name: "negative_prompt", id: "f-negative_prompt", maxLength: 2000, rows: 2 }),
    model,
    width: number("width", 512, { min: 64, max: 2048, step: 8, required: true }),
    height: number("height", 512, { min: 64, max: 2048, step: 8, required: true }),
    steps: number("steps", 30, { min: 1, max: 150, required: true }),
    guidance_scale: number("guidance_scale", 7.5, { min: 0, max: 30, step: 0.1, required: true }),
    seed: number("seed", "", { min: 0, max: 4294967295 }),
    num_images: number("num_images", 1, { min: 1, max: 8, required: true }),
    scheduler: h("select", { name: "scheduler", id: "f-scheduler" }, SCHEDULERS.map((s) => h("option", { value: s }, s))),
    output_format: h("select", { name: "output_format", id: "f-output_format" }, FORMATS.map((s) => h("option", { value: s }, s))),
    webhook_url: h("input", { name: "webhook_url", id: "f-webhook_url", type: "url", placeholder: "https://…", autocomplete: "off" }),
    metadata: h("textarea", { name: "metadata", id: "f-metadata", rows: 2, placeholder: "key=value, one a line" }),
    strength: number("strength", "", { min: 0, max: 1, step: 0.05 }),
  };
  // Image inputs: each uploaded when dropped or chosen, then sent as {"upload": id}.
  const images = { image: imageDrop("image", "Input image", "Image-to-image: the job starts from it. PNG, JPEG or WebP."),
    mask_image: imageDrop("mask_image", "Mask", "Inpainting: white is repainted, black kept; the input image's size.") };
  const loras = h("div", { className: "loras" });
  const addLora = h("button", { type: "button" }, "Add a LoRA");
  addLora.addEventListener("click", () => {
    loras.append(loraRow(loras.children.length));
    addLora.disabled = loras.children.length >= MAX_LORAS;
    loras.lastElementChild.querySelector("input").focus();
  });
  const submit = h("button", { type: "submit" }, "Submit job");
  const summary = h("p", { className: "field-error", id: "form-error", "aria-live": "assertive" });
  const form = h("form", { className: "job-form", noValidate: true, "aria-describedby": "form-error" },
    field("Prompt", controls.prompt, "What to draw; at most 2000 characters (CLIP reads the first 77 tokens)."),
    field("Negative prompt", controls.negative_prompt),
    field("Model", controls.model, models.length ? "From the server's model catalog." : "Blank: the server's default model."),
    h("div", { className: "row" },
      field("Width", controls.width, "64–2048, a multiple of 8"), field("Height", controls.height, "width × height ≤ 2 359 296 px"),
      field("Steps", controls.steps, "1–150"), field("Guidance", controls.guidance_scale, "0–30")),
    h("div", { className: "row" },
      field("Seed", controls.seed, "Blank: random"), field("Images", controls.num_images, "1–8"),
      field("Scheduler", controls.scheduler), field("Format", controls.output_format)),
    h("fieldset", { className: "group" }, h("legend", {}, "LoRAs (at most 4)"), loras, addLora),
    h("fieldset", { className: "group images" }, h("legend", {}, "Input images (optional)"),
      images.image.element, field("Strength", controls.strength, "0–1: how much of the image is repainted; blank: 0.8"),
      images.mask_image.element),
    adapters.elements,
    field("Webhook URL", controls.webhook_url, "Signed Standard Webhooks events as the job changes state."),
    field("Metadata", controls.metadata, "Stored with the job and sent in webhooks."),
    summary, h("div", { className: "actions" }, submit));

  if (models.length) {
    adapters.show(chosenModel());
    model.addEventListener("change", () => {
      const chosen = models.find((m) => m.id === model.value);
      adapters.show(chosenModel());
      for (const [name, value] of Object.entries((chosen && chosen.defaults) || {})) if (controls[name] && value !== null && typeof value !== "object") controls[name].value = value;
      for (const [name, limit] of Object.entries((chosen && chosen.limits) || {})) {
        const [key, bound] = name.startsWith("max_") ? [name.slice(4), "max"] : name.startsWith("min_") ? [name.slice(4), "min"] : [name, null];
        // `max_side` bounds width and height; `max_steps` the steps (the catalog's ModelLimits names).
        const targets = key === "side" ? [controls.width, controls.height] : [controls[key]];
        for (const control of targets) if (bound && control && typeof limit === "number") control[bound] = limit;
      }
    });
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    for (const error of form.querySelectorAll(".field-error")) error.textContent = "";
    for (const control of form.querySelectorAll("[aria-invalid]")) control.removeAttribute("aria-invalid");
    const body = {};
    const data = new FormData(form);
    for (const [name, value] of data) {
      if (name.startsWith("loras.") || name === "metadata" || value === "" || images[name] || isAdapterField(name)) continue;
      const control = controls[name];
      body[name] = control && control.type === "number" ? Number(value) : value;
    }
    const list = [...loras.children].map((_, i) => ({ name: data.get(`loras.${i}.name`), scale: Number(data.get(`loras.${i}.scale`) || 1) })).filter((l) => l.name);
    if (list.length) body.loras = list;
    const metadata = String(data.get("metadata") || "").split("\n").map((line) => line.trim()).filter(Boolean);
    submit.disabled = true;
    for (const [name, drop] of Object.entries(images)) {
      await drop.ready();
      if (drop.value()) body[name] = drop.value();
    }
    await adapters.add(body);
    if (metadata.length) body.metadata = Object.fromEntries(metadata.map((line) => { const i = line.indexOf("="); return i < 0 ? [line, ""] : [line.slice(0, i).trim(), line.slice(i + 1).trim()]; }));
    try {
      const job = await api("/v1/jobs", { method: "POST", body, signal });
      notify(`Job ${job.id.slice(0, 8)} queued.`);
      go(`#/job/${job.id}`);
    } catch (error) {
      submit.disabled = false;
      showErrors(form, error, summary);
    }
  });
  main.append(h("h1", {}, "New job"), form);
  controls.prompt.focus();
}

function showErrors(form, error, summary) {
  const unplaced = [];
  for (const item of error.fields || []) {
    const name = item.field.replace(/^loras\.(\d+)\.(\w+)$/, "lora-$1-$2").replace(/^metadata\..*/, "metadata")
      .replace(/^(image|mask_image|controlnets\.\d+\.image|ip_adapter\.image)\..*/, "$1");
    const control = form.querySelector(`#f-${CSS.escape(name)}`);
    const slot = control && form.querySelector(`#${CSS.escape(control.id)}-error`);
    if (slot) {
      slot.textContent = item.message;
      control.setAttribute("aria-invalid", "true");
    } else unplaced.push(`${item.field}: ${item.message}`);
  }
  summary.textContent = unplaced.length ? unplaced.join("; ") : error.fields && error.fields.length ? "Please fix the fields marked above." : error.message;
  const first = form.querySelector("[aria-invalid]");
  if (first) first.focus();
}
