/** Order statistics the benchmarks report (NaN for no samples). */
export function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** The q-quantile (0..1) by rank, no interpolation. */
export function percentile(xs: number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

/**
 * Distribution-free 95 % confidence interval of the median of xs (order statistics: the
 * ranks a Binomial(n, 1/2) puts 2.5 % below and above). [NaN, NaN] under 6 samples.
 */
export function medianCI95(xs: number[]): [number, number] {
  const n = xs.length;
  if (n < 6) return [NaN, NaN];
  const s = [...xs].sort((a, b) => a - b);
  // largest k with P(Bin(n, 1/2) <= k - 1) <= 0.025: the interval is [s[k-1], s[n-k]]
  let cdf = 0;
  let term = Math.pow(0.5, n); // P(X = 0)
  let k = 0;
  while (k < n && cdf + term <= 0.025) {
    cdf += term;
    term = (term * (n - k)) / (k + 1);
    k++;
  }
  k = Math.max(k, 1);
  return [s[k - 1], s[n - k]];
}
