/**
 * Trend of one series over a window: least-squares slope (per minute), R²,
 * monotonicity, and the numbers the suspect rules need to tell growth from noise.
 */

export interface Point {
  /** unix seconds */
  t: number;
  v: number;
}

export interface Trend {
  n: number;
  span_s: number;
  /** least-squares slope in value units per minute */
  slope_per_min: number;
  intercept: number;
  /** coefficient of determination of the linear fit (0 when the series is flat) */
  r2: number;
  /** share of consecutive steps that do not go down (0..1); 1 for a non-decreasing series */
  monotonic_ratio: number;
  /** last - first */
  delta: number;
  /** slope × span: the growth the fit explains */
  fitted_delta: number;
  /** standard deviation of the residuals around the fit */
  residual_sd: number;
  first: number;
  last: number;
  min: number;
  max: number;
}

export function trend(points: readonly Point[]): Trend {
  const n = points.length;
  const empty: Trend = {
    n, span_s: 0, slope_per_min: 0, intercept: n ? points[0].v : 0, r2: 0, monotonic_ratio: 0, delta: 0,
    fitted_delta: 0, residual_sd: 0, first: n ? points[0].v : 0, last: n ? points[n - 1].v : 0,
    min: n ? points[0].v : 0, max: n ? points[0].v : 0,
  };
  if (n < 2) return empty;
  // centre times to keep the sums well conditioned (unix seconds squared lose precision)
  const t0 = points[0].t;
  let st = 0, sv = 0, min = Infinity, max = -Infinity;
  for (const p of points) {
    st += p.t - t0;
    sv += p.v;
    if (p.v < min) min = p.v;
    if (p.v > max) max = p.v;
  }
  const mt = st / n, mv = sv / n;
  let sxx = 0, sxy = 0, syy = 0;
  for (const p of points) {
    const dx = p.t - t0 - mt, dy = p.v - mv;
    sxx += dx * dx;
    sxy += dx * dy;
    syy += dy * dy;
  }
  const slope = sxx > 0 ? sxy / sxx : 0; // per second
  const intercept = mv - slope * (mt + t0);
  let sse = 0;
  for (const p of points) {
    const r = p.v - (intercept + slope * p.t);
    sse += r * r;
  }
  const r2 = syy > 0 ? Math.max(0, 1 - sse / syy) : 0;
  let up = 0;
  for (let i = 1; i < n; i++) if (points[i].v >= points[i - 1].v) up++;
  const span = points[n - 1].t - points[0].t;
  return {
    n, span_s: span, slope_per_min: slope * 60, intercept, r2, monotonic_ratio: up / (n - 1),
    delta: points[n - 1].v - points[0].v, fitted_delta: slope * span,
    residual_sd: n > 2 ? Math.sqrt(sse / (n - 2)) : 0, first: points[0].v, last: points[n - 1].v, min, max,
  };
}

export interface GrowthRules {
  /** fewer points than this: no verdict */
  min_points: number;
  /** the series must cover at least this share of the window */
  min_coverage: number;
  min_r2: number;
  min_monotonic_ratio: number;
  /** fitted growth must exceed this many residual standard deviations */
  noise_factor: number;
  /** and this many bytes (or units) in absolute terms */
  min_growth: number;
  /**
   * the later half of the window must grow at least this share of what the earlier half
   * grew: growth that slows down towards a stop is a cache or an arena filling up
   */
  min_half_ratio: number;
  /**
   * seconds after a worker starts during which its process-level series (RSS, regions,
   * allocator, LuaJIT, shm, rooted pools) are not judged: code pages fault in, caches,
   * arenas and the JIT fill up, and all of it looks like steady growth for a minute or
   * so. Unrooted pool groups are judged from the start (suspects.ts warmupExempt).
   */
  warmup_s: number;
  /**
   * process-level series (RSS, mapping regions, the LuaJIT arena) must also grow by this
   * share of the worker's RSS within the window: they move in pages and arena steps while
   * allocator peaks settle, for minutes after the warm-up (measured: a correct worker's RSS
   * +1.1 MB/min at 17 MB in its second minute, +0.4 MB/min in its fourth). A leak there is
   * judged over a window long enough to outgrow that; leaks of nginx memory itself are
   * seen sooner by the pool and size-class series, which keep the absolute minimum.
   */
  process_min_ratio: number;
}

export const DEFAULT_RULES: GrowthRules = {
  min_points: 5,
  min_coverage: 0.5,
  min_r2: 0.8,
  min_monotonic_ratio: 0.7,
  noise_factor: 4,
  min_growth: 1 << 20,
  min_half_ratio: 1 / 3,
  warmup_s: 60,
  process_min_ratio: 0.1,
};

/**
 * Does the series keep growing beyond noise across the window? Besides slope,
 * R² and monotonicity, both halves of the window must grow, the later one at least
 * min_half_ratio of the earlier one (a dict that filled and then stayed full grows
 * only in the first half; a cache warming up grows ever slower).
 */
export function keepsGrowing(points: readonly Point[], window_s: number, rules: GrowthRules = DEFAULT_RULES): { ok: boolean; trend: Trend; reason?: string } {
  const tr = trend(points);
  if (tr.n < rules.min_points) return { ok: false, trend: tr, reason: "too few points" };
  if (tr.span_s < window_s * rules.min_coverage) return { ok: false, trend: tr, reason: "covers too little of the window" };
  if (tr.slope_per_min <= 0) return { ok: false, trend: tr, reason: "not growing" };
  if (tr.fitted_delta < rules.min_growth || tr.delta < rules.min_growth) return { ok: false, trend: tr, reason: "growth below minimum" };
  if (tr.r2 < rules.min_r2) return { ok: false, trend: tr, reason: "R² too low" };
  if (tr.monotonic_ratio < rules.min_monotonic_ratio) return { ok: false, trend: tr, reason: "not monotonic" };
  if (tr.fitted_delta < rules.noise_factor * tr.residual_sd) return { ok: false, trend: tr, reason: "growth within noise" };
  const mid = points[0].t + tr.span_s / 2;
  const h1 = points.filter((p) => p.t <= mid), h2 = points.filter((p) => p.t >= mid);
  const half = rules.min_growth / 4;
  if (h1.length >= 2 && h2.length >= 2) {
    const d1 = h1[h1.length - 1].v - h1[0].v, d2 = h2[h2.length - 1].v - h2[0].v;
    if (d1 < half || d2 < half) return { ok: false, trend: tr, reason: "growth stopped within the window" };
    if (d2 < rules.min_half_ratio * d1) return { ok: false, trend: tr, reason: "growth slowing down to a stop" };
  }
  return { ok: true, trend: tr };
}
