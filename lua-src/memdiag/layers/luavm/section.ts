import { arr } from "../../base/json";
import { Census } from "./census";
import { collectTimers, TimerCounts } from "./timers";

/** The snapshot's lua block: timer counts every collection, the latest census once one ran. */
let last: Census | undefined;

export function serialisableCensus(c: Census): Census {
  return { ...c, types: arr(c.types), cdata: c.cdata && arr(c.cdata), aborted: c.aborted && arr(c.aborted), holders: c.holders && { ...c.holders, tables: arr(c.holders.tables), threads: arr(c.holders.threads) } };
}

/** keep a finished census for the snapshots that follow */
export function keepCensus(c: Census): void {
  if (c.ok) last = c;
}

export function collectLua(): { timers: TimerCounts; census?: Census } {
  return { timers: collectTimers(), census: last && serialisableCensus(last) };
}
