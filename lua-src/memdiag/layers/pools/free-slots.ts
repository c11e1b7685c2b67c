/**
 * The free-slot scan of the rooted walk, in a module of its own so that it stays compiled when
 * the walk itself runs interpreted (layers/pools/rooted-jit.ts): a worker is often configured for far
 * more connections than it holds, and stepping over tens of thousands of mostly free slots
 * interpreted costs a few times what it costs compiled (docs/design-figures.md). Its loop has
 * one shape whatever the traffic (a free slot, or the end of the run), so its trace does not
 * churn as the walk's does.
 */
import { rdI32, rdPtr } from "../../safe/mem";

/**
 * A free slot has fd -1 and c->data linking to the next free slot (inside the array) or NULL; a
 * slot with fd -1 and anything else in c->data is a socket-less connection in use (Lua timers).
 */
export function isFreeSlot(fd: number, data: number, connections: number, arrEnd: number): boolean {
  return fd === -1 && (data === 0 || (data >= connections && data < arrEnd));
}

/** The first slot from `i` (below `stop`) that is not a free one (isFreeSlot), or `stop`. */
export function skipFreeSlots(connections: number, arrEnd: number, cSize: number, cFd: number, cData: number, i: number, stop: number): number {
  while (i < stop) {
    const c = connections + i * cSize;
    if (!isFreeSlot(rdI32(c + cFd), rdPtr(c + cData), connections, arrEnd)) return i;
    i++;
  }
  return stop;
}
