/**
 * Inline SVG for the HTML report: line charts over time, paired bars (window
 * start vs now) and an icicle flame graph (root on top, width = bytes). Plain
 * strings, no script, no external assets: the file opens offline and prints.
 */
import { Chart } from "./model";
import { fmtBytes } from "../format";

const W = 760;
const COLORS = ["#c0392b", "#2e86c1", "#27ae60", "#8e44ad", "#d68910"];

export const esc = (s: string): string => s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);

function clock(t: number): string {
  return new Date(t * 1000).toISOString().slice(11, 16);
}

function lines(c: Extract<Chart, { kind: "lines" }>): string {
  const H = 220, L = 70, R = 10, T = 10, B = 40;
  const all = c.series.flatMap((s) => s.points);
  if (all.length < 2) return "";
  let t0 = Infinity, t1 = -Infinity, vmax = 0;
  for (const [t, v] of all) {
    t0 = Math.min(t0, t);
    t1 = Math.max(t1, t);
    vmax = Math.max(vmax, v);
  }
  if (t1 <= t0) t1 = t0 + 1;
  if (vmax <= 0) vmax = 1;
  const x = (t: number) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const y = (v: number) => T + (1 - v / vmax) * (H - T - B);
  const out: string[] = [];
  for (let i = 0; i <= 4; i++) {
    const v = (vmax * i) / 4;
    out.push(`<line x1="${L}" x2="${W - R}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#ddd"/><text x="${L - 4}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end" font-size="10">${esc(fmtBytes(v))}</text>`);
  }
  out.push(`<text x="${L}" y="${H - B + 14}" font-size="10">${clock(t0)}</text><text x="${W - R}" y="${H - B + 14}" font-size="10" text-anchor="end">${clock(t1)} UTC</text>`);
  c.series.forEach((s, i) => {
    if (!s.points.length) return;
    const d = s.points.map(([t, v], k) => `${k ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}`).join("");
    out.push(`<path class="series" d="${d}" fill="none" stroke="${COLORS[i % COLORS.length]}" stroke-width="2" data-points="${s.points.length}"><title>${esc(s.label)}</title></path>`);
    out.push(`<rect x="${L + i * 150}" y="${H - 16}" width="10" height="10" fill="${COLORS[i % COLORS.length]}"/><text x="${L + i * 150 + 14}" y="${H - 7}" font-size="11">${esc(s.label.slice(0, 22))}</text>`);
  });
  return `<svg class="chart lines" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${esc(c.title)}">${out.join("")}</svg>`;
}

function bars(c: Extract<Chart, { kind: "bars" }>): string {
  const n = c.labels.length;
  if (!n) return "";
  const H = 240, L = 50, T = 10, B = 70;
  const vmax = Math.max(1, ...c.start, ...c.now);
  const slot = (W - L - 10) / n;
  const bw = Math.max(2, slot / 2 - 2);
  // a square-root scale: a class of thousands next to classes of a few stays readable
  const h = (v: number) => (Math.sqrt(v) / Math.sqrt(vmax)) * (H - T - B);
  const out: string[] = [`<line x1="${L}" x2="${W - 10}" y1="${H - B}" y2="${H - B}" stroke="#999"/>`];
  for (let i = 0; i < n; i++) {
    const x0 = L + i * slot;
    const a = c.start[i], b = c.now[i];
    out.push(`<rect class="bar start" x="${x0.toFixed(1)}" y="${(H - B - h(a)).toFixed(1)}" width="${bw.toFixed(1)}" height="${h(a).toFixed(1)}" fill="#95a5a6"><title>${esc(c.labels[i])} at the start: ${a.toLocaleString("en-US")}</title></rect>`);
    out.push(`<rect class="bar now" x="${(x0 + bw + 1).toFixed(1)}" y="${(H - B - h(b)).toFixed(1)}" width="${bw.toFixed(1)}" height="${h(b).toFixed(1)}" fill="${b > a ? "#c0392b" : "#2e86c1"}"><title>${esc(c.labels[i])} now: ${b.toLocaleString("en-US")} (${b - a >= 0 ? "+" : ""}${(b - a).toLocaleString("en-US")})</title></rect>`);
    out.push(`<text x="${(x0 + bw).toFixed(1)}" y="${H - B + 8}" font-size="9" transform="rotate(50 ${(x0 + bw).toFixed(1)} ${H - B + 8})">${esc(c.labels[i])}</text>`);
  }
  out.push(`<text x="${L}" y="${T + 8}" font-size="10">max ${vmax.toLocaleString("en-US")} (square-root scale); grey: start, red: grew, blue: not</text>`);
  return `<svg class="chart bars" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${esc(c.title)}">${out.join("")}</svg>`;
}

interface Node {
  name: string;
  value: number;
  kids: Map<string, Node>;
}

function flame(c: Extract<Chart, { kind: "flame" }>): string {
  const root: Node = { name: "all", value: 0, kids: new Map() };
  for (const it of c.items) {
    root.value += it.value;
    let n = root;
    for (const name of it.stack) {
      let k = n.kids.get(name);
      if (!k) n.kids.set(name, (k = { name, value: 0, kids: new Map() }));
      k.value += it.value;
      n = k;
    }
  }
  if (root.value <= 0) return "";
  const ROW = 17;
  const cells: string[] = [];
  let depth = 0;
  const place = (n: Node, x: number, w: number, d: number): void => {
    if (w < 0.5 || d > 60) return;
    depth = Math.max(depth, d);
    let hue = 0;
    for (const ch of n.name) hue = (hue * 31 + ch.charCodeAt(0)) % 360;
    const fill = d === 0 ? "#3b4a66" : `hsl(${15 + (hue % 35)},70%,${50 + (hue % 12)}%)`;
    const label = n.name.length * 6.5 > w - 6 ? n.name.slice(0, Math.max(0, Math.floor((w - 6) / 6.5) - 1)) + "…" : n.name;
    cells.push(`<g class="frame" transform="translate(${x.toFixed(2)},${d * ROW})"><title>${esc(n.name)}: ${esc(fmtBytes(n.value))} (${((100 * n.value) / root.value).toFixed(1)}%)</title><rect width="${Math.max(0.5, w - 0.5).toFixed(2)}" height="${ROW - 1}" fill="${fill}"/>${w > 24 ? `<text x="3" y="${ROW - 5}" font-size="11" fill="${d === 0 ? "#fff" : "#111"}">${esc(d === 0 ? `all · ${fmtBytes(n.value)}` : label)}</text>` : ""}</g>`);
    let cx = x;
    for (const k of [...n.kids.values()].sort((p, q) => q.value - p.value)) {
      const kw = (w * k.value) / n.value;
      place(k, cx, kw, d + 1);
      cx += kw;
    }
  };
  place(root, 0, W, 0);
  const H = (depth + 1) * ROW;
  return `<svg class="chart flame" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${esc(c.title)}" font-family="monospace">${cells.join("")}</svg>`;
}

/** the chart as an SVG element; "" when it has nothing to draw */
export function chartSvg(c: Chart): string {
  if (c.kind === "lines") return lines(c);
  if (c.kind === "bars") return bars(c);
  return flame(c);
}
