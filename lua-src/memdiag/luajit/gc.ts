/** Bytes held by this worker's LuaJIT GC (all Lua objects of the VM, agent included). */
export function collectLuajit(): { gc_bytes: number } {
  return { gc_bytes: Math.floor(collectgarbage("count") * 1024) };
}
