/**
 * LuaJIT keeps one handler per VM event: jit.attach(fn, "trace") replaces whatever handler the
 * application attached (jit.v, jit.dump, a profiler), and detaching leaves it with none. The
 * agent's trace diagnostics attach only while the slot is free.
 */
import * as bit from "bit";

/** the registry table of VM event handlers (LJ_VMEVENTS_REGKEY) */
const REGKEY = "_VMEVENTS";

/** the slot of an event name in that table: lib_jit.c jit_attach's hash, VMEVENT_HASHIDX */
function slotOf(event: string): number {
  let h = event.length;
  for (let i = 1; i <= event.length; i++) h = bit.bxor(h, bit.tobit(bit.rol(h, 6) + string.byte(event, i)));
  return bit.lshift(h, 3);
}

const TRACE_SLOT = slotOf("trace");

/** Someone else's function handles the VM's "trace" events (not `mine`). */
export function traceEventsTaken(mine: unknown): boolean {
  const reg = debug.getregistry() as unknown as LuaTable<string, LuaTable<number, unknown> | undefined>;
  const events = reg.get(REGKEY);
  if (events === undefined) return false;
  const h = events.get(TRACE_SLOT);
  return h !== undefined && h !== mine;
}
