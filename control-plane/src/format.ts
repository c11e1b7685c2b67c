/** Human formatting for labels and evidence sentences (binary units, one decimal). */

const UNITS = ["B", "KB", "MB", "GB", "TB"];

export function fmtBytes(n: number): string {
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

export function fmtSigned(n: number, f: (x: number) => string = fmtBytes): string {
  return n >= 0 ? `+${f(n)}` : f(n);
}

/** 600 → "10 min", 90 → "90 s", 7200 → "2 h" */
export function fmtDuration(s: number): string {
  if (s < 120) return `${Math.round(s)} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${Math.round(s / 360) / 10} h`;
}

/** a log2 size class as "256–512 KB" (both ends in the same unit when they share it) */
export function fmtRange(min: number, max: number): string {
  const a = fmtBytes(min).split(" ");
  const b = fmtBytes(max).split(" ");
  if (a[1] === b[1]) return `${a[0]}–${b[0]} ${b[1]}`;
  return `${a.join(" ")}–${b.join(" ")}`;
}

/** max of a log2 class that starts at min (the schema's max_bytes is inclusive: 2*min - 1) */
export function classMax(min: number): number {
  return min === 0 ? 32 : min * 2;
}
