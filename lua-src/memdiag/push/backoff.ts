/**
 * Reconnect delays: exponential with "equal jitter" (half fixed, half random),
 * so a fleet of workers that lost the control plane together does not come
 * back in lockstep, and no delay is ever near zero. Pure Lua (no ngx).
 */
export type Rand = (this: void) => number;

/** Delay (s) before attempt `attempt` (0-based): base·factor^attempt capped at max, then in [d/2, d). */
export function backoffDelay(attempt: number, base: number, max: number, factor: number, r: number): number {
  let d = base * math.pow(factor, Math.min(attempt, 60));
  if (d > max) d = max;
  return d / 2 + (d / 2) * r;
}

/**
 * A private generator (Park–Miller, exact in doubles): math.random is shared
 * with the host application and starts from the same seed in every forked
 * worker, which would give all workers the same "jitter".
 */
export function seededRand(seed: number): Rand {
  let x = Math.floor(math.abs(seed)) % 2147483646 + 1;
  return () => {
    x = (x * 16807) % 2147483647;
    return (x - 1) / 2147483646;
  };
}

export class Backoff {
  attempts = 0;
  constructor(
    public base = 0.5,
    public max = 30,
    public factor = 2,
    private rand: Rand = math.random,
  ) {}

  /** The next delay; each call grows the exponent. */
  next(): number {
    const d = backoffDelay(this.attempts, this.base, this.max, this.factor, this.rand());
    this.attempts++;
    return d;
  }

  /** After a successful handshake. */
  reset(): void {
    this.attempts = 0;
  }
}
