/** Polling for a condition in integration tests: no timing is asserted, the deadline only bounds a hang. */
import { sleep } from "./nginx";

/** polls `fn` every `everyMs` until it returns a value; throws naming `what` after `ms` */
export async function until<T>(what: string, fn: () => Promise<T | undefined>, ms = 60000, everyMs = 100): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(everyMs);
  }
}
