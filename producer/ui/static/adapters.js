// The New job page's ControlNet and IP-Adapter sections: a model picker filled from the chosen catalog model's
// lists (GET /v1/models: `controlnets`, `ip_adapters`, name → source), the image by drag and drop or file input
// (uploaded straight to storage, as the input image is) and its scale. A section shows only while the chosen
// model (or the server's default, for "server default") lists models of its kind: one that lists none takes none.
import { field, h } from "./dom.js";
import { imageDrop } from "./drop.js";

function picker(name, label) {
  const select = h("select", { name, id: `f-${name}` });
  return { select, element: field(label, select, "From the model's catalog list; none: leave it out.") };
}

function fill(select, names) {
  const kept = select.value;
  select.replaceChildren(h("option", { value: "" }, "none"), ...names.map((n) => h("option", { value: n }, n)));
  select.value = names.includes(kept) ? kept : "";
}

function scale(name, value) {
  return h("input", { name, id: `f-${name}`, type: "number", min: 0, max: 4, step: 0.05, value, inputMode: "decimal" });
}

/** Both sections; `show(model)` fits them to a catalog model (or hides them), `add(body)` puts what was chosen into
 * the request (after each upload in progress has finished). */
export function adapterSections() {
  const cn = picker("controlnets.0.model", "ControlNet");
  const cnImage = imageDrop("controlnets.0.image", "Control image", "The map the ControlNet follows, or a photo to take Canny edges of.");
  const cnScale = scale("controlnets.0.conditioning_scale", 1);
  const canny = h("input", { name: "controlnets.0.preprocess", id: "f-controlnets.0.preprocess", type: "checkbox" });
  const control = h("fieldset", { className: "group images", hidden: true, "data-section": "controlnet" },
    h("legend", {}, "ControlNet (optional)"), cn.element, cnImage.element,
    field("Conditioning scale", cnScale, "0–4: how strongly it steers; 1 as trained."),
    field("Canny edges of the image", canny, "Checked: the worker takes Canny edges of a photo; unchecked: the image is the map."));
  const ip = picker("ip_adapter.model", "IP-Adapter");
  const ipImage = imageDrop("ip_adapter.image", "Reference image", "The output borrows its look.");
  const ipScale = scale("ip_adapter.scale", 1);
  const reference = h("fieldset", { className: "group images", hidden: true, "data-section": "ip_adapter" },
    h("legend", {}, "IP-Adapter (optional)"), ip.element, ipImage.element, field("Reference scale", ipScale, "0–4: how much of its look."));

  function show(model) {
    const controlnets = Object.keys((model && model.controlnets) || {});
    const adapters = Object.keys((model && model.ip_adapters) || {});
    fill(cn.select, controlnets);
    fill(ip.select, adapters);
    control.hidden = !controlnets.length;
    reference.hidden = !adapters.length;
  }

  async function add(body) {
    await Promise.all([cnImage.ready(), ipImage.ready()]);
    // A half-filled section is sent as it is: the API's 422 then names the missing field beside it.
    if (!control.hidden && (cn.select.value || cnImage.value())) {
      body.controlnets = [{ model: cn.select.value || undefined, image: cnImage.value() || undefined,
        conditioning_scale: Number(cnScale.value || 1), preprocess: canny.checked ? "canny" : "none" }];
    }
    if (!reference.hidden && (ip.select.value || ipImage.value())) {
      body.ip_adapter = { model: ip.select.value || undefined, image: ipImage.value() || undefined, scale: Number(ipScale.value || 1) };
    }
  }

  return { elements: [control, reference], show, add };
}

/** Whether a form control belongs to these sections (the page's own loop skips them). */
export function isAdapterField(name) {
  return name.startsWith("controlnets.") || name.startsWith("ip_adapter.");
}
