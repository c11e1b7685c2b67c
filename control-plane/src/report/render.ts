/**
 * The report as text (terminal), Markdown (a ticket comment) and one
 * self-contained HTML file (inline CSS and SVG, no script, no external asset).
 * All three say the same things in the same order: the JSON model is the source.
 */
import { Fact, Report, Step, Verdict } from "./model";
import { fmtBytes, fmtSigned } from "../format";
import { chartSvg, esc } from "./svg";

const VERDICT_MARK: Record<Verdict, string> = { grew: "GREW", stable: "STABLE", "not enough data": "NOT ENOUGH DATA" };

const iso = (t: number): string => new Date(t * 1000).toISOString().replace(/\.\d+Z$/, "Z");

function val(f: Fact, which: "start" | "now" | "delta"): string {
  const v = f[which];
  if (v === undefined) return "";
  if (f.unit === "ratio") return `${Math.round(v * 100)}%`;
  if (f.unit === "count") return which === "delta" && v >= 0 ? `+${v.toLocaleString("en-US")}` : v.toLocaleString("en-US");
  return which === "delta" ? fmtSigned(v) : fmtBytes(v);
}

function header(r: Report): string[] {
  const w = r.worker;
  return [
    `worker ${w.key} (pid ${w.pid}, instance ${w.instance})`,
    `window ${iso(r.window.from)} → ${iso(r.window.to)}; ${r.snapshots} snapshots, ${r.deep_snapshots} deep; verdicts from ${r.basis === "trend" ? "trends over the window" : "the difference of two deep snapshots"}`,
  ];
}

function wrap(text: string, width: number, indent: string): string[] {
  const out: string[] = [];
  let line = "";
  for (const word of text.split(/\s+/)) {
    if (line && line.length + 1 + word.length > width - indent.length) {
      out.push(indent + line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  if (line) out.push(indent + line);
  return out;
}

export function renderText(r: Report, width = 100): string {
  const out: string[] = [`MEMORY REPORT — ${r.verdict.toUpperCase()}`, ...header(r), "", ...wrap(r.summary, width, ""), ""];
  r.steps.forEach((s, i) => {
    out.push(`${i + 1}. ${s.title}  [${VERDICT_MARK[s.verdict]}]`);
    out.push(...wrap(s.finding, width, "   "));
    const rows = s.facts.map((f) => [f.label, val(f, "start"), val(f, "now"), val(f, "delta"), f.note ?? ""]);
    if (rows.length) {
      const lw = Math.min(44, Math.max(...rows.map((x) => x[0].length)));
      out.push(`   ${"".padEnd(lw)}  ${"start".padStart(10)}  ${"now".padStart(10)}  ${"change".padStart(10)}`);
      for (const [l, a, b, d, n] of rows) {
        const label = l.length > lw ? l.slice(0, lw - 1) + "…" : l.padEnd(lw);
        out.push(`   ${label}  ${a.padStart(10)}  ${b.padStart(10)}  ${d.padStart(10)}${n ? "  " + n : ""}`.slice(0, Math.max(width, 60) + 200).replace(/\s+$/, ""));
      }
    }
    for (const x of s.ruled_out) out.push(...wrap(`ruled out: ${x}`, width, "   "));
    out.push("");
  });
  if (r.others?.length) {
    out.push("Other workers of the instance:");
    for (const o of r.others) out.push(`   ${o.key}: RSS ${o.rss_bytes !== undefined ? fmtBytes(o.rss_bytes) : "?"}${o.rss_delta !== undefined ? ` (${fmtSigned(o.rss_delta)})` : ""}${o.top_suspect ? `; top suspect: ${o.top_suspect}` : ""}`);
    out.push("");
  }
  out.push("What to do next:");
  for (const n of r.next.length ? r.next : ["nothing: no step is missing data"]) out.push(...wrap(`- ${n}`, width, "  ").map((l, i) => (i === 0 ? l.slice(2) : l)));
  return out.join("\n") + "\n";
}

const mdCell = (s: string): string => s.replace(/\|/g, "\\|").replace(/\n/g, " ");

export function renderMarkdown(r: Report): string {
  const out: string[] = [`# Memory report: ${r.verdict}`, "", ...header(r).map((l) => `- ${l}`), "", `**${mdCell(r.summary)}**`, ""];
  r.steps.forEach((s, i) => {
    out.push(`## ${i + 1}. ${s.title} — ${VERDICT_MARK[s.verdict]}`, "", s.finding, "");
    if (s.facts.length) {
      out.push("| | start | now | change | |", "|---|---:|---:|---:|---|");
      for (const f of s.facts) out.push(`| ${mdCell(f.key ? `**${f.label}**` : f.label)} | ${val(f, "start")} | ${val(f, "now")} | ${val(f, "delta")} | ${mdCell(f.note ?? "")} |`);
      out.push("");
    }
    for (const x of s.ruled_out) out.push(`- ruled out: ${x}`);
    if (s.ruled_out.length) out.push("");
  });
  if (r.others?.length) {
    out.push("## Other workers of the instance", "");
    for (const o of r.others) out.push(`- ${o.key}: RSS ${o.rss_bytes !== undefined ? fmtBytes(o.rss_bytes) : "?"}${o.rss_delta !== undefined ? ` (${fmtSigned(o.rss_delta)})` : ""}${o.top_suspect ? `; top suspect: ${o.top_suspect}` : ""}`);
    out.push("");
  }
  out.push("## What to do next", "");
  for (const n of r.next.length ? r.next : ["nothing: no step is missing data"]) out.push(`- ${n}`);
  return out.join("\n") + "\n";
}

const CSS = `body{font:14px/1.45 system-ui,sans-serif;max-width:820px;margin:24px auto;color:#222;padding:0 12px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 6px}.meta{color:#666;font-size:12px}
.summary{background:#f6f6f6;border-left:4px solid #888;padding:8px 12px}.growth .summary{border-color:#c0392b}
.v{font-size:11px;font-weight:600;padding:2px 6px;border-radius:3px;margin-left:6px;vertical-align:middle}
.v-grew{background:#fadbd8;color:#922b21}.v-stable{background:#d5f5e3;color:#1e8449}.v-nodata{background:#eee;color:#555}
table{border-collapse:collapse;margin:8px 0;font-size:12px}td,th{padding:2px 8px;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
td.n{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}tr.key td{font-weight:600}
.ruled{color:#555;font-size:12px}svg.chart{display:block;max-width:100%;height:auto;margin:8px 0}
code,.mono{font-family:ui-monospace,monospace;font-size:12px;word-break:break-all}`;

function stepHtml(s: Step, i: number): string {
  const cls = s.verdict === "grew" ? "v-grew" : s.verdict === "stable" ? "v-stable" : "v-nodata";
  const facts = s.facts.length
    ? `<table><tr><th></th><th>start</th><th>now</th><th>change</th><th></th></tr>${s.facts
        .map((f) => `<tr${f.key ? ' class="key"' : ""}><td>${esc(f.label)}</td><td class="n">${val(f, "start")}</td><td class="n">${val(f, "now")}</td><td class="n">${val(f, "delta")}</td><td class="mono">${esc(f.note ?? "")}</td></tr>`)
        .join("")}</table>`
    : "";
  const chart = s.chart ? chartSvg(s.chart) : "";
  const ruled = s.ruled_out.length ? `<ul class="ruled">${s.ruled_out.map((x) => `<li>ruled out: ${esc(x)}</li>`).join("")}</ul>` : "";
  return `<section class="step" id="step-${s.id}" data-verdict="${esc(s.verdict)}"><h2>${i + 1}. ${esc(s.title)}<span class="v ${cls}">${VERDICT_MARK[s.verdict]}</span></h2><p class="finding">${esc(s.finding)}</p>${chart}${facts}${ruled}</section>`;
}

/** the report's body (what the web console's Report view shows) */
export function renderHtmlBody(r: Report): string {
  const others = r.others?.length
    ? `<h2>Other workers of the instance</h2><ul>${r.others.map((o) => `<li>${esc(o.key)}: RSS ${o.rss_bytes !== undefined ? fmtBytes(o.rss_bytes) : "?"}${o.rss_delta !== undefined ? ` (${fmtSigned(o.rss_delta)})` : ""}${o.top_suspect ? `; top suspect: ${esc(o.top_suspect)}` : ""}</li>`).join("")}</ul>`
    : "";
  return `<div class="report ${r.verdict === "growth" ? "growth" : ""}" data-verdict="${esc(r.verdict)}"><h1>Memory report: ${esc(r.verdict)}</h1><div class="meta">${header(r).map(esc).join("<br>")}<br>generated ${iso(r.generated_at)}</div><p class="summary">${esc(r.summary)}</p>${r.steps.map(stepHtml).join("")}${others}<h2>What to do next</h2><ul class="next">${(r.next.length ? r.next : ["nothing: no step is missing data"]).map((n) => `<li><span class="mono">${esc(n)}</span></li>`).join("")}</ul></div>`;
}

export function renderHtml(r: Report): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><title>memdiag report: ${esc(r.worker.key)}</title><style>${CSS}</style></head><body>${renderHtmlBody(r)}</body></html>\n`;
}

export type ReportFormat = "text" | "md" | "html" | "json";
export const REPORT_FORMATS: readonly ReportFormat[] = ["text", "md", "html", "json"];

export function renderReport(r: Report, f: ReportFormat): string {
  if (f === "text") return renderText(r);
  if (f === "md") return renderMarkdown(r);
  if (f === "html") return renderHtml(r);
  return JSON.stringify(r, null, 2) + "\n";
}

export const REPORT_CONTENT_TYPE: Record<ReportFormat, string> = {
  text: "text/plain; charset=utf-8",
  md: "text/markdown; charset=utf-8",
  html: "text/html; charset=utf-8",
  json: "application/json; charset=utf-8",
};
