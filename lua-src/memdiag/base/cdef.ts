import * as ffi from "ffi";

/**
 * ffi.cdef that tolerates a declaration made earlier by another module
 * (or by lua-resty-core): several agent modules declare the same libc
 * functions next to the code that uses them, and the VM is shared.
 */
export function cdef(decl: string): void {
  const [ok, err] = pcall(ffi.cdef, decl);
  if (!ok && !string.find(tostring(err), "attempt to redefine", 1, true)) {
    error(err, 2);
  }
}
