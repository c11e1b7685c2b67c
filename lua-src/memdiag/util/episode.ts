/**
 * A condition that can recur many times in a row (the control plane away, a full queue,
 * rejected snapshots, failing collections) logged as an episode: one line when it starts
 * or changes, one when it ends with how often it recurred and for how long. A gateway
 * whose control plane is down for a week logs two lines per worker, not one per attempt.
 *
 * Pure Lua apart from its defaults: tests pass their own log function and clock.
 */
export type LogFn = (this: void, level: number, msg: string) => void;
export type Clock = (this: void) => number;

function ngxLog(this: void, level: number, msg: string): void {
  ngx.log(level, msg);
}

function ngxNow(this: void): number {
  ngx.update_time();
  return ngx.now();
}

function plural(n: number, one: string, many: string): string {
  return `${n} ${n === 1 ? one : many}`;
}

export function duration(s: number): string {
  if (s < 90) return `${string.format("%.0f", s)} s`;
  if (s < 5400) return `${string.format("%.0f", s / 60)} min`;
  return `${string.format("%.1f", s / 3600)} h`;
}

/** the first line of an error: a traceback's frames do not make it another condition */
export function firstLine(msg: string): string {
  const [l] = string.match(msg, "^[^\n]*");
  return l ?? msg;
}

export class Episode {
  /** what the current episode is (undefined: none) */
  key: string | undefined = undefined;
  /** occurrences in the current episode, the first included */
  count = 0;
  since = 0;
  private first = "";

  constructor(
    /** prefix of every line, e.g. "memdiag push: " */
    private prefix: string,
    /** what one occurrence is called in the end line ("attempt", "dropped snapshot") */
    private unit: [string, string] = ["occurrence", "occurrences"],
    private logf: LogFn = ngxLog,
    private now: Clock = ngxNow,
  ) {}

  /**
   * One occurrence of condition `key`. Logged (at `level`) only when no episode runs or it is
   * another condition; returns whether it logged. `detail` is logged after `msg` but not
   * repeated in the end line (e.g. the next retry's delay).
   */
  hit(level: number, key: string, msg: string, detail = ""): boolean {
    if (key === this.key) {
      this.count++;
      return false;
    }
    const prev = this.key !== undefined ? `; before that ${this.summary()}` : "";
    this.key = key;
    this.count = 1;
    this.since = this.now();
    this.first = msg;
    this.logf(level, this.prefix + msg + detail + prev);
    return true;
  }

  /** "3 attempts over 2 min: <first message>" */
  summary(): string {
    return `${plural(this.count, this.unit[0], this.unit[1])} over ${duration(this.now() - this.since)} (${this.first})`;
  }

  /**
   * The condition is over: logs `msg` with the episode's summary when one runs (`always`: also
   * when it had a single occurrence; otherwise only repeats are worth a line). Returns whether
   * it logged.
   */
  end(level: number, msg: string, always = true): boolean {
    if (this.key === undefined) return false;
    const logged = always || this.count > 1;
    if (logged) this.logf(level, `${this.prefix}${msg} after ${this.summary()}`);
    this.key = undefined;
    this.count = 0;
    return logged;
  }

  active(): boolean {
    return this.key !== undefined;
  }
}
