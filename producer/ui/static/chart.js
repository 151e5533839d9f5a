// Small inline-SVG charts (no library): a line chart over time and a stacked bar chart by day.
import { h, svg } from "./dom.js";

const W = 640;
const H = 220;
const PAD = { left: 44, right: 12, top: 12, bottom: 28 };

function scale(domain, range) {
  const [d0, d1] = domain;
  const [r0, r1] = range;
  const span = d1 - d0 || 1;
  return (v) => r0 + ((v - d0) / span) * (r1 - r0);
}

function niceMax(value) {
  if (value <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= value) return m * p;
  return 10 * p;
}

function legend(series) {
  return h("ul", { className: "legend" }, series.map((s, i) => h("li", { className: `c${i}` }, h("span", { className: "swatch", "aria-hidden": "true" }), s.name)));
}

/** `series`: [{name, points: [[x, y], …]}], x in unix seconds. Returns a figure with the SVG and a legend. */
export function lineChart(series, { label, yFormat = String, xFormat } = {}) {
  const all = series.flatMap((s) => s.points);
  const xs = all.map((p) => p[0]);
  const x0 = Math.min(...xs, Date.now() / 1000 - 3600);
  const x1 = Math.max(...xs, Date.now() / 1000);
  const yMax = niceMax(Math.max(1, ...all.map((p) => p[1] ?? 0)));
  const x = scale([x0, x1], [PAD.left, W - PAD.right]);
  const y = scale([0, yMax], [H - PAD.bottom, PAD.top]);
  const grid = [0, 0.25, 0.5, 0.75, 1].map((f) => {
    const v = yMax * f;
    return svg("g", { class: "grid" },
      svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v) }),
      svg("text", { x: PAD.left - 6, y: y(v) + 4, "text-anchor": "end" }, yFormat(v)));
  });
  const fmt = xFormat || ((t) => new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
  const ticks = [0, 0.5, 1].map((f) => {
    const t = x0 + (x1 - x0) * f;
    return svg("text", { x: x(t), y: H - 8, "text-anchor": f === 0 ? "start" : f === 1 ? "end" : "middle", class: "axis" }, fmt(t));
  });
  const lines = series.map((s, i) => {
    const pts = s.points.filter((p) => p[1] !== null && p[1] !== undefined);
    const d = pts.map((p, j) => `${j ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
    return svg("path", { d: d || "M0,0", class: `line c${i}` });
  });
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label, class: "chart" },
    svg("title", {}, label), grid, ticks, lines);
  return h("figure", { className: "chart-box" }, chart, legend(series));
}

/** `bars`: [{label, parts: [v, …]}] stacked; `names` name the parts. */
export function barChart(bars, names, { label, yFormat = String } = {}) {
  const yMax = niceMax(Math.max(0, ...bars.map((b) => b.parts.reduce((a, v) => a + (v || 0), 0))));
  const y = scale([0, yMax], [H - PAD.bottom, PAD.top]);
  const slot = (W - PAD.left - PAD.right) / Math.max(1, bars.length);
  const grid = [0, 0.5, 1].map((f) => svg("g", { class: "grid" },
    svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y(yMax * f), y2: y(yMax * f) }),
    svg("text", { x: PAD.left - 6, y: y(yMax * f) + 4, "text-anchor": "end" }, yFormat(yMax * f))));
  const columns = bars.map((bar, i) => {
    let base = 0;
    const x = PAD.left + i * slot + slot * 0.15;
    const rects = bar.parts.map((v, j) => {
      const top = base + (v || 0);
      const rect = svg("rect", { x, width: slot * 0.7, y: y(top), height: Math.max(0, y(base) - y(top)), class: `bar c${j}` },
        svg("title", {}, `${bar.label}: ${names[j]} ${yFormat(v || 0)}`));
      base = top;
      return rect;
    });
    return svg("g", {}, rects, svg("text", { x: x + slot * 0.35, y: H - 8, "text-anchor": "middle", class: "axis" }, bar.label));
  });
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label, class: "chart" },
    svg("title", {}, label), grid, columns);
  return h("figure", { className: "chart-box" }, chart, legend(names.map((name) => ({ name }))));
}

/** A horizontal waterfall: each phase starts where the previous ended. `phases`: [{name, s}]. */
export function waterfall(phases, { label, format = String } = {}) {
  const total = phases.reduce((a, p) => a + (p.s || 0), 0) || 1;
  const rowH = 26;
  const height = phases.length * rowH + 8;
  const x = scale([0, total], [140, W - 90]);
  let at = 0;
  const rows = phases.map((p, i) => {
    const start = at;
    at += p.s || 0;
    const yTop = 4 + i * rowH;
    return svg("g", {},
      svg("text", { x: 4, y: yTop + 17, class: "axis" }, p.name),
      svg("rect", { x: x(start), y: yTop + 4, width: Math.max(p.s ? 2 : 0, x(at) - x(start)), height: rowH - 8, class: `bar c${i}` },
        svg("title", {}, `${p.name}: ${format(p.s)}`)),
      svg("text", { x: Math.min(x(at) + 6, W - 86), y: yTop + 17, class: "axis" }, p.s === null || p.s === undefined ? "—" : format(p.s)));
  });
  return h("figure", { className: "chart-box" },
    svg("svg", { viewBox: `0 0 ${W} ${height}`, role: "img", "aria-label": label, class: "chart waterfall" }, svg("title", {}, label), rows));
}
