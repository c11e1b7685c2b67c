import * as ffi from "ffi";

/**
 * cdata by C type: counts, bytes and finalizers per ctype id, tallied by the census's walk into
 * a table of doubles outside the Lua heap (one row per possible id: CTypeID is 16 bits), then
 * named with ffi.typeinfo — a struct's or typedef's own name, pointers and arrays spelled from
 * what they point at.
 */
export const CT_IDS = 65536;
/** per id: count, bytes, with a finalizer */
export const CT_STRIDE = 3;
/** the marked bit of a cdata with a finalizer (lj_gc.h LJ_GC_CDATA_FIN) */
export const CDATA_FIN = 0x10;
const TOP = 10;

export interface CdataType {
  ctype: string;
  count: number;
  bytes: number;
  /** of count: with a finalizer (ffi.gc, or a metatype's __gc): each costs a collector cycle more before its memory is freed */
  finalizers: number;
}

type TypeInfo = { info: number; size?: number; name?: string };
const typeinfo = (ffi as unknown as { typeinfo?: (this: void, id: number) => TypeInfo | undefined }).typeinfo;

/** a readable name of ctype `id` (bounded depth) */
export function ctypeName(id: number, depth = 0): string {
  const ti = typeinfo?.(id);
  if (ti === undefined || depth > 4) return `ctype #${id}`;
  const t = Math.floor(ti.info / 2 ** 28);
  const child = ti.info % 65536;
  if (t === 1) return `${(ti.info / 2 ** 23) % 2 >= 1 ? "union" : "struct"} ${ti.name ?? `#${id}`}`;
  if (t === 5) return `enum ${ti.name ?? `#${id}`}`;
  if (ti.name !== undefined) return ti.name;
  if (t === 2) return `${ctypeName(child, depth + 1)} *`;
  if (t === 3) {
    const el = typeinfo?.(child);
    const n = ti.size !== undefined && el?.size ? `${ti.size / el.size}` : "?";
    return `${ctypeName(child, depth + 1)}[${n}]`;
  }
  if (t === 8 || t === 7) return ctypeName(child, depth + 1);
  if (t === 0) {
    // CTF_BOOL, CTF_FP, CTF_UNSIGNED (lj_ctype.h)
    const flag = (bit: number): boolean => Math.floor(ti.info / bit) % 2 === 1;
    const size = ti.size ?? 0;
    if (flag(0x08000000)) return "bool";
    if (flag(0x04000000)) return size === 4 ? "float" : size === 8 ? "double" : `float${size * 8}`;
    return `${flag(0x00800000) ? "u" : ""}int${size * 8}_t`;
  }
  if (t === 6) return "function";
  return `ctype #${id}`;
}

/** the largest cdata types by bytes from the tally `byCt` (double[CT_IDS * CT_STRIDE]) */
export function topCdata(byCt: { [i: number]: number }): CdataType[] {
  const ids: number[] = [];
  for (let id = 0; id < CT_IDS; id++) {
    if (byCt[id * CT_STRIDE] === 0) continue;
    const b = byCt[id * CT_STRIDE + 1];
    if (ids.length === TOP && b <= byCt[ids[TOP - 1] * CT_STRIDE + 1]) continue;
    let k = ids.length < TOP ? ids.length : TOP - 1;
    while (k > 0 && byCt[ids[k - 1] * CT_STRIDE + 1] < b) {
      ids[k] = ids[k - 1];
      k--;
    }
    ids[k] = id;
  }
  return ids.map((id) => ({ ctype: ctypeName(id), count: byCt[id * CT_STRIDE], bytes: byCt[id * CT_STRIDE + 1], finalizers: byCt[id * CT_STRIDE + 2] }));
}
