/**
 * ngx.timer counts of this worker: pending (scheduled, not yet expired) and running (their
 * callbacks executing, or sleeping inside a cosocket or ngx.sleep). Both include memdiag's own
 * timers: the collection that reads them runs in one. A self-rescheduling timer that never
 * stops keeps pending constant; one that reschedules more than once per run makes it grow.
 */
export interface TimerCounts {
  pending: number;
  running: number;
}

export function collectTimers(): TimerCounts {
  return { pending: ngx.timer.pending_count(), running: ngx.timer.running_count() };
}
