// Gallery: recent outputs as a grid, the prompt on hover (and on focus), more as you scroll.
import { api } from "../api.js";
import { h, shortId } from "../dom.js";

export const title = "Gallery";

export async function render(main, { signal }) {
  const grid = h("ul", { className: "gallery", "aria-label": "Recent images" });
  const more = h("button", { type: "button" }, "Load more");
  const end = h("p", { className: "empty", hidden: true }, "That is every image.");
  main.append(h("h1", {}, "Gallery"), grid, h("div", { className: "actions" }, more), end);
  let cursor = null;
  let loading = false;
  let done = false;

  async function page() {
    if (loading || done) return;
    loading = true;
    const query = new URLSearchParams({ status: "succeeded", limit: "24" });
    if (cursor) query.set("cursor", cursor);
    const data = await api(`/v1/jobs?${query}`, { signal });
    for (const job of data.jobs) {
      job.outputs.forEach((o, i) => {
        if (!o.url) return;
        const caption = h("span", { className: "caption" }, job.request.prompt);
        grid.append(h("li", {}, h("a", { href: `#/job/${job.id}`, title: job.request.prompt, className: "tile" },
          h("img", { src: o.url, alt: `${job.request.prompt} (job ${shortId(job.id)}, image ${i + 1})`, loading: "lazy", width: o.width, height: o.height }),
          caption)));
      });
    }
    cursor = data.next_cursor;
    done = !cursor;
    more.hidden = done;
    end.hidden = !done || grid.children.length === 0;
    if (done && !grid.children.length) main.append(h("p", { className: "empty" }, "No images yet. ", h("a", { href: "#/new" }, "Submit a job"), "."));
    loading = false;
  }

  more.addEventListener("click", page);
  await page();
  // Infinite scroll: the "Load more" button doubles as the sentinel (and stays for keyboard users).
  const observer = new IntersectionObserver((entries) => { if (entries.some((e) => e.isIntersecting)) page().catch(() => {}); }, { rootMargin: "400px" });
  observer.observe(more);
  signal.addEventListener("abort", () => observer.disconnect());
}
