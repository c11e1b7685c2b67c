/** What the deep-scan tests share: one finished ?deep=1 scan, and a heap that needs many slices. */
import { Nginx } from "./nginx";
import { validateSnapshot } from "../../schema/validate";

/** Runs ?deep=1 on the answering worker; its snapshot, checked against the schema. */
export async function deepScan(ngx: Nginx): Promise<any> {
  const r = await ngx.memdiag("?deep=1");
  expect(r.status).toBe(200);
  const w = JSON.parse(r.body).workers[0];
  expect(w.scan.state).toBe("done");
  expect(validateSnapshot(w).error).toBeUndefined();
  return w;
}

/**
 * /t/inflate?n=N: N malloc(256) chunks, each filled with a pointer to the previous one, never
 * freed: a heap the deep scan needs many slices for (the reference scan follows the chain).
 */
export const INFLATE_LOCATION = `
    location = /t/inflate {
      content_by_lua_block {
        local ffi = require "ffi"
        pcall(ffi.cdef, "void *malloc(size_t size);")
        local prev = 0
        for i = 1, tonumber(ngx.var.arg_n) do
          local p = ffi.C.malloc(256)
          local w = ffi.cast("uint64_t *", p)
          for j = 0, 31 do w[j] = prev end
          prev = tonumber(ffi.cast("uintptr_t", p))
        end
        ngx.say('{}')
      }
    }`;
