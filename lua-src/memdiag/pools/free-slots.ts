/**
 * The free-slot scan of the rooted walk, in a module of its own so that it stays compiled when
 * the walk itself runs interpreted (pools/rooted-jit.ts): a worker is often configured for far
 * more connections than it holds, and interpreted, stepping over 65,535 mostly free slots cost
 * 3.2 ms per collection against 0.6-1.1 compiled. Its loop has one shape whatever the traffic
 * (a free slot, or the end of the run), so its trace does not churn as the walk's did.
 */
import { rdI32, rdPtr } from "../safe/mem";

/**
 * The first slot from `i` (below `stop`) that is not a free one, or `stop`. A free slot has fd -1
 * and c->data linking to the next free slot (inside the array) or NULL; a slot with fd -1 and
 * anything else in c->data is a socket-less connection in use (Lua timers), not free.
 */
export function skipFreeSlots(connections: number, arrEnd: number, cSize: number, cFd: number, cData: number, i: number, stop: number): number {
  while (i < stop) {
    const c = connections + i * cSize;
    if (rdI32(c + cFd) !== -1) return i;
    const d = rdPtr(c + cData);
    if (d !== 0 && (d < connections || d >= arrEnd)) return i;
    i++;
  }
  return stop;
}
