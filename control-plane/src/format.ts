/**
 * Human formatting shared by the terminal console, the web console and the evidence
 * sentences: binary units with one decimal, one way to write a change (a zero change
 * is "0 B" / "0" / "0%", never "+0" or "±0"), and the region classes with their labels
 * and chart colours. The web console loads these same functions as /format.js
 * (browserScript), so the two consoles cannot drift apart. Keep this file free of
 * imports and of exported `const` declarations (tables are exported at the end), so
 * that every function's source text runs as it is in a browser.
 */

const UNITS = ["B", "KB", "MB", "GB", "TB"];

/** 1536 → "1.5 KB"; "–" for a missing value */
function fmtBytes(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return "–";
  const neg = n < 0;
  let v = Math.abs(n);
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  const s = u === 0 ? String(Math.round(v)) : v >= 100 ? v.toFixed(0) : v.toFixed(1);
  return `${neg ? "-" : ""}${s} ${UNITS[u]}`;
}

/** a change in bytes: "+1.2 MB", "-340 KB", "0 B"; "–" when unknown */
function signedBytes(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return "–";
  if (n === 0) return "0 B";
  return n > 0 ? `+${fmtBytes(n)}` : `-${fmtBytes(-n)}`;
}

/** a change in a count: "+1,234", "-5", "0"; "" when unknown */
function signedCount(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return "";
  if (n === 0) return "0";
  return (n > 0 ? "+" : "-") + Math.abs(n).toLocaleString("en-US");
}

/** a count with thousands separators; "–" when unknown */
function fmtCount(n: number | null | undefined): string {
  return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US");
}

/** a relative change: "+12.5%", "-3.0%", "0%"; "new" when there was nothing before */
function fmtRatio(r: number | null | undefined): string {
  if (r === null || r === undefined || !Number.isFinite(r)) return "new";
  const p = r * 100;
  if (p === 0) return "0%";
  const s = Math.abs(p) >= 100 ? Math.abs(p).toFixed(0) : Math.abs(p).toFixed(1);
  return (p > 0 ? "+" : "-") + s + "%";
}

/** 600 → "10 min", 90 → "90 s", 7200 → "2 h" */
function fmtDuration(s: number): string {
  if (s < 120) return `${Math.round(s)} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${Math.round(s / 360) / 10} h`;
}

/** a log2 size class as "256–512 KB" (both ends in the same unit when they share it) */
function fmtRange(min: number, max: number): string {
  const a = fmtBytes(min).split(" ");
  const b = fmtBytes(max).split(" ");
  if (a[1] === b[1]) return `${a[0]}–${b[0]} ${b[1]}`;
  return `${a.join(" ")}–${b.join(" ")}`;
}

/** max of a log2 class that starts at min (the schema's max_bytes is inclusive: 2*min - 1) */
function classMax(min: number): number {
  return min === 0 ? 32 : min * 2;
}

/**
 * The address-space classes of system.regions (schema/snapshot.v1.schema.json), in the
 * order the consoles list and stack them: [class, label, chart colour].
 */
const REGION_CLASSES: [string, string, string][] = [
  ["glibc_heap", "glibc heap", "#7aa2f7"],
  ["luajit", "LuaJIT", "#bb9af7"],
  ["shm_zone", "shm zones", "#7dcfff"],
  ["stack", "stacks", "#9ece6a"],
  ["code", "code", "#565f89"],
  ["file", "files", "#414868"],
  ["other_anon", "other anon", "#e0af68"],
];

/** label of a region class ("glibc heap"); the class itself when unknown */
function regionLabel(cls: string): string {
  for (const [c, label] of REGION_CLASSES) if (c === cls) return label;
  return cls;
}

export { UNITS, REGION_CLASSES, fmtBytes, signedBytes, signedCount, fmtCount, fmtRatio, fmtDuration, fmtRange, classMax, regionLabel };

/** What the web console loads as /format.js: this file's tables and functions as browser globals. */
export function browserScript(): string {
  const parts = ['"use strict";', "// generated from control-plane/src/format.ts: the terminal console's formatting"];
  parts.push(`const UNITS = ${JSON.stringify(UNITS)};`, `const REGION_CLASSES = ${JSON.stringify(REGION_CLASSES)};`);
  for (const f of [fmtBytes, signedBytes, signedCount, fmtCount, fmtRatio, fmtDuration, fmtRange, classMax, regionLabel]) parts.push(f.toString());
  return parts.join("\n") + "\n";
}
