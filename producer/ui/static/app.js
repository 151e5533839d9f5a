// The dashboard's shell: hash routes (#/jobs, #/job/<id>, …), the API-key prompt, and one live page at a time.
import { api, apiKey, onUnauthorized, setApiKey } from "./api.js";
import { h, clear } from "./dom.js";

const pages = {
  jobs: () => import("./pages/jobs.js"),
  job: () => import("./pages/job.js"),
  new: () => import("./pages/new.js"),
  gallery: () => import("./pages/gallery.js"),
  batches: () => import("./pages/batches.js"),
  fleet: () => import("./pages/fleet.js"),
  costs: () => import("./pages/costs.js"),
};

const main = document.getElementById("main");
const statusLine = document.getElementById("status");
let current = null; // { controller: AbortController }
let asking = false;
let rendered = 0;

/** `#/job/abc?x=1` → { page: "job", arg: "abc", params: URLSearchParams }. */
export function route(hash = location.hash) {
  const [path, query = ""] = hash.replace(/^#\/?/, "").split("?");
  const [page, ...rest] = path.split("/");
  return { page: pages[page] ? page : "jobs", arg: rest.join("/") || null, params: new URLSearchParams(query) };
}

/** Go to a route (adds a history entry). */
export function go(hash) {
  if (location.hash === hash) render();
  else location.hash = hash;
}

/** A short message in the polite live region (errors, confirmations). */
export function notify(message, kind = "info") {
  statusLine.hidden = !message;
  statusLine.className = `notice ${kind}`;
  statusLine.textContent = message || "";
}

async function render() {
  if (current) current.controller.abort();
  const controller = new AbortController();
  current = { controller };
  const { page, arg, params } = route();
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.page === page) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  notify("");
  const started = performance.now();
  try {
    const module = await pages[page]();
    if (controller.signal.aborted) return;
    clear(main);
    document.title = `${module.title || page} · sdqueue`;
    await module.render(main, { arg, params, signal: controller.signal, go, notify });
    main.dataset.renderedMs = String(Math.round(performance.now() - started));
    main.dataset.page = page;
    // Keyboard and screen-reader users land on the new page, not on the link they followed.
    if (rendered++ && !main.contains(document.activeElement)) main.focus({ preventScroll: true });
  } catch (error) {
    if (controller.signal.aborted) return;
    clear(main);
    append404(error);
  }
}

function append404(error) {
  main.append(h("h1", {}, "Something went wrong"), h("p", { className: "error" }, error.message || String(error)));
}

function askForKey(message = "") {
  const dialog = document.getElementById("key-dialog");
  if (asking) return;
  asking = true;
  document.getElementById("key-error").textContent = message;
  dialog.showModal();
  document.getElementById("key-input").focus();
}

function setUp() {
  const dialog = document.getElementById("key-dialog");
  const form = document.getElementById("key-form");
  const forget = document.getElementById("forget-key");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = document.getElementById("key-input");
    setApiKey(input.value.trim());
    try {
      await api("/v1/jobs?limit=1");
    } catch (error) {
      document.getElementById("key-error").textContent = error.status === 401 ? "That key was refused." : error.message;
      return;
    }
    input.value = "";
    asking = false;
    dialog.close();
    forget.hidden = false;
    render();
  });
  dialog.addEventListener("cancel", (event) => event.preventDefault()); // nothing works without a key
  forget.hidden = !apiKey();
  forget.addEventListener("click", () => {
    setApiKey(null);
    forget.hidden = true;
    askForKey();
  });
  onUnauthorized(() => {
    setApiKey(null);
    askForKey(apiKey() ? "That key was refused." : "");
  });
  window.addEventListener("hashchange", render);
  render();
}

setUp();
