/**
 * Plain-ANSI text layout for the terminal consoles: segments with an optional
 * colour, cut to a visible width (the colour codes do not count), columns padded.
 */

export type Color = "dim" | "bold" | "red" | "green" | "yellow" | "cyan" | "inverse";
const CODES: Record<Color, string> = { dim: "2", bold: "1", red: "31", green: "32", yellow: "33", cyan: "36", inverse: "7" };

export interface Seg {
  text: string;
  color?: Color;
}
export type Line = Seg[];

export const seg = (text: string, color?: Color): Seg => ({ text, color });

/** one line, at most `width` visible characters, coloured when `color` */
export function renderLine(line: Line, width: number, color: boolean): string {
  let out = "";
  let left = width;
  for (const s of line) {
    if (left <= 0) break;
    let t = s.text;
    if ([...t].length > left) t = [...t].slice(0, Math.max(0, left - 1)).join("") + "…";
    left -= [...t].length;
    out += color && s.color ? `\x1b[${CODES[s.color]}m${t}\x1b[0m` : t;
  }
  return out.replace(/\s+$/, "");
}

export function visibleLength(s: string): number {
  return [...s.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, "")].length;
}

export function padRight(s: string, n: number): string {
  const l = [...s].length;
  if (l > n) return [...s].slice(0, Math.max(0, n - 1)).join("") + "…";
  return s + " ".repeat(n - l);
}

export function padLeft(s: string, n: number): string {
  const l = [...s].length;
  if (l > n) return [...s].slice(0, n).join("");
  return " ".repeat(n - l) + s;
}

export const deltaColor = (n: number | null | undefined): Color | undefined =>
  n === null || n === undefined || n === 0 ? undefined : n > 0 ? "yellow" : "green";

/** word-wrap plain text to `width`, at most `maxLines` lines (the last one ends with … when cut) */
export function wrap(text: string, width: number, maxLines = Infinity): string[] {
  const words = text.split(/\s+/).filter(Boolean);
  const lines: string[] = [];
  let cur = "";
  for (const w of words) {
    if (cur === "") cur = w;
    else if ([...cur].length + 1 + [...w].length <= width) cur += " " + w;
    else {
      lines.push(cur);
      cur = w;
    }
  }
  if (cur) lines.push(cur);
  if (lines.length > maxLines) {
    const kept = lines.slice(0, maxLines);
    const last = [...kept[maxLines - 1]];
    kept[maxLines - 1] = (last.length + 2 <= width ? last.join("") : last.slice(0, Math.max(0, width - 2)).join("")) + " …";
    return kept;
  }
  return lines.map((l) => ([...l].length > width ? padRight(l, width) : l));
}

/** "10m" → 600, "90s" → 90, "1h" → 3600, "300" → 300 */
export function parseWindow(s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(s|m|min|h)?$/.exec(s.trim());
  if (!m) throw new Error(`--window: expected e.g. 90s, 10m or 1h, got '${s}'`);
  const v = Number(m[1]);
  const unit = m[2] ?? "s";
  const out = unit === "h" ? v * 3600 : unit === "s" ? v : v * 60;
  if (out <= 0) throw new Error("--window must be positive");
  return out;
}

export function fmtWindow(s: number): string {
  if (s % 3600 === 0) return `${s / 3600}h`;
  if (s % 60 === 0) return `${s / 60}m`;
  return `${s}s`;
}

export function clock(t: number): string {
  return new Date(t * 1000).toISOString().slice(11, 19);
}

/** tiny argv parser: --flag value, --flag=value, boolean flags listed in `bools` */
export function parseFlags(argv: readonly string[], known: Record<string, "string" | "bool">): Record<string, string | boolean> {
  const out: Record<string, string | boolean> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(a);
    if (!m || !(m[1] in known)) throw new Error(`unknown argument '${a}' (known: ${Object.keys(known).map((k) => "--" + k).join(", ")})`);
    const name = m[1];
    if (known[name] === "bool") {
      if (m[2] !== undefined) throw new Error(`--${name} takes no value`);
      out[name] = true;
    } else {
      const v = m[2] ?? argv[++i];
      if (v === undefined || (m[2] === undefined && v.startsWith("--"))) throw new Error(`--${name} needs a value`);
      out[name] = v;
    }
  }
  return out;
}
