// An image field for the New job page: drop an image on the zone, or choose one with its file input (the keyboard
// way: the input is a labelled, focusable control). The file goes straight to storage through POST /v1/uploads,
// and the field's value becomes the upload reference ({"upload": id}); a thumbnail shows what was taken.
import { uploadImage } from "./api.js";
import { field, h } from "./dom.js";

const TYPES = ["image/png", "image/jpeg", "image/webp"];

/** A field named `name` (the request field) labelled `label`; `value()` is its reference or null, `ready()` waits
 * for an upload in progress. */
export function imageDrop(name, label, hint) {
  const input = h("input", { type: "file", name, id: `f-${name}`, accept: TYPES.join(","), className: "drop-file" });
  const wrap = field(label, input, hint);
  const thumb = h("img", { className: "drop-thumb", alt: "", hidden: true });
  const state = h("p", { className: "drop-state muted", id: `f-${name}-state`, "aria-live": "polite" }, "Drop an image here, or choose a file.");
  const remove = h("button", { type: "button", hidden: true }, `Remove ${label.toLowerCase()}`);
  const zone = h("div", { className: "drop-zone", "data-drop": name });
  input.setAttribute("aria-describedby", `${input.getAttribute("aria-describedby")} f-${name}-state`);
  input.replaceWith(zone);
  zone.append(input, thumb, state, remove);
  let reference = null;
  let pending = Promise.resolve();
  let shown = null;

  function show(file, text) {
    if (shown) URL.revokeObjectURL(shown);
    shown = file ? URL.createObjectURL(file) : null;
    thumb.hidden = !file;
    if (file) { thumb.src = shown; thumb.alt = `${label}: ${file.name}`; } else thumb.removeAttribute("src");
    remove.hidden = !file;
    state.textContent = text;
  }

  async function take(file) {
    reference = null;
    if (!TYPES.includes(file.type)) { show(null, `${file.name} is not a PNG, JPEG or WebP image.`); return; }
    zone.classList.add("busy");
    state.textContent = `Uploading ${file.name}…`;
    try {
      const grant = await uploadImage(file);
      reference = grant.image;
      show(file, `${file.name} uploaded (upload ${grant.id}).`);
    } catch (error) {
      show(null, `Upload of ${file.name} failed: ${error.message}`);
    } finally {
      zone.classList.remove("busy");
    }
  }

  const start = (file) => { pending = take(file); return pending; };
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (event) => { event.preventDefault(); zone.classList.add("over"); });
  }
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const file = event.dataTransfer && event.dataTransfer.files[0];
    if (file) start(file);
  });
  input.addEventListener("change", () => { if (input.files[0]) start(input.files[0]); });
  remove.addEventListener("click", () => { reference = null; input.value = ""; show(null, "Drop an image here, or choose a file."); input.focus(); });
  return { element: wrap, value: () => reference, ready: () => pending };
}
