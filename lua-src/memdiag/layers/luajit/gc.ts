import { gcHoldMode } from "./gc-hold";

/**
 * Bytes held by this worker's LuaJIT GC (all Lua objects of the VM, agent included), and how
 * the agent gives the collector back after holding it (layers/luajit/gc-hold.ts).
 */
export function collectLuajit(): { gc_bytes: number; gc_hold: string } {
  return { gc_bytes: Math.floor(collectgarbage("count") * 1024), gc_hold: gcHoldMode() };
}
