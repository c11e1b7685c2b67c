import { trend, keepsGrowing, DEFAULT_RULES } from "../../control-plane/src/trends";

describe("trend: least squares, R², monotonicity", () => {
  test("an exact line gives its slope per minute and R² 1", () => {
    // v = 1000 + 50 bytes/s → 3000 bytes/min
    const pts = Array.from({ length: 11 }, (_, i) => ({ t: 1_700_000_000 + i * 10, v: 1000 + 50 * i * 10 }));
    const tr = trend(pts);
    expect(tr.slope_per_min).toBeCloseTo(3000, 6);
    expect(tr.r2).toBeCloseTo(1, 12);
    expect(tr.monotonic_ratio).toBe(1);
    expect(tr.delta).toBe(5000);
    expect(tr.span_s).toBe(100);
    expect(tr.residual_sd).toBeCloseTo(0, 6);
  });

  test("slope and R² agree with a hand computation", () => {
    // x = 0,60,120,180 (s); y = 1,3,2,6 → x̄=90, ȳ=3, Sxy = (-90)(-2)+(-30)(0)+(30)(-1)+(90)(3) = 420, Sxx = 18000
    const pts = [{ t: 0, v: 1 }, { t: 60, v: 3 }, { t: 120, v: 2 }, { t: 180, v: 6 }];
    const tr = trend(pts);
    expect(tr.slope_per_min).toBeCloseTo((420 / 18000) * 60, 10);
    // SSE: fit ŷ = 3 + (420/18000)(x-90): residuals -2+2.1=0.1? compute directly
    const b = 420 / 18000;
    const sse = pts.reduce((s, p) => s + (p.v - (3 + b * (p.t - 90))) ** 2, 0);
    const syy = pts.reduce((s, p) => s + (p.v - 3) ** 2, 0);
    expect(tr.r2).toBeCloseTo(1 - sse / syy, 10);
    expect(tr.monotonic_ratio).toBeCloseTo(2 / 3, 10);
  });

  test("a flat series has slope 0 and R² 0", () => {
    const tr = trend([{ t: 0, v: 5 }, { t: 10, v: 5 }, { t: 20, v: 5 }]);
    expect(tr.slope_per_min).toBe(0);
    expect(tr.r2).toBe(0);
  });
});

describe("keepsGrowing: growth beyond noise across the window", () => {
  const MB = 1 << 20;
  const t0 = 1_700_000_000;
  test("steady leak with noise is growth", () => {
    const pts = Array.from({ length: 61 }, (_, i) => ({ t: t0 + i * 10, v: 100 * MB + i * 200_000 + (i % 2 ? 30_000 : -30_000) }));
    expect(keepsGrowing(pts, 600).ok).toBe(true);
  });
  test("bounded oscillation is not", () => {
    const pts = Array.from({ length: 61 }, (_, i) => ({ t: t0 + i * 10, v: 100 * MB + Math.round(20 * MB * Math.sin(i / 3)) }));
    const r = keepsGrowing(pts, 600);
    expect(r.ok).toBe(false);
  });
  test("a dict that fills and then stays full is not", () => {
    const pts = Array.from({ length: 61 }, (_, i) => ({ t: t0 + i * 10, v: Math.min(i, 20) * MB }));
    const r = keepsGrowing(pts, 600);
    expect(r.ok).toBe(false);
  });
  test("growth below the minimum is not", () => {
    const pts = Array.from({ length: 61 }, (_, i) => ({ t: t0 + i * 10, v: 1000 + i * 100 }));
    expect(keepsGrowing(pts, 600, DEFAULT_RULES).reason).toBe("growth below minimum");
  });
  test("too few points is no verdict", () => {
    expect(keepsGrowing([{ t: 0, v: 0 }, { t: 600, v: 100 * MB }], 600).ok).toBe(false);
  });
});
