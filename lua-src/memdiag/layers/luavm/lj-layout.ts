import * as ffi from "ffi";
import { rdPtr, rdU32, rdU64, rdU8 } from "../../safe/mem";
import { gc64, threadAddr } from "../luajit/thread";

/**
 * Where LuaJIT keeps what the Lua heap census reads (lj_obj.h, lj_jit.h, lj_ctype.h of
 * LuaJIT 2.1 with GC64, the x86-64 build of OpenResty and Debian's luajit2): offsets of
 * global_State, the GC object headers and the size fields each object's free uses.
 *
 * Nothing here is trusted until verifyLayout() passed in the running VM: it finds
 * global_State through the running thread and checks it by gc.total against
 * collectgarbage("count"), the main thread's back pointer, and then one object of every kind
 * the census sizes, made for the purpose with known sizes (a table of known array and hash
 * sizes and metatable, a string of known length, a closure of three upvalues, a userdata, a
 * coroutine, a cdata array of known size and C type), read back through these offsets. A
 * mismatch refuses the census with the check that failed; a non-GC64 VM is refused outright.
 */
export const LJ = {
  // global_State
  gc_total: 16,
  gc_threshold: 24,
  gc_state: 33,
  gc_sweepstr: 36,
  gc_root: 40,
  gc_sweep: 48,
  str_tab: 152,
  str_mask: 160,
  str_num: 164,
  mainthref: 192,
  tmpbuf_e: 208,
  tmpbuf_b: 216,
  ctype_state: 384,
  /** sizeof(GG_State): global_State, main thread, jit_State and dispatch, allocated at once */
  gg_size: 6296,
  // every GC object: GCRef nextgc; uint8_t marked; uint8_t gct
  marked: 8,
  gct: 9,
  // GCstr
  str_size: 24,
  str_len: 20,
  // GCtab
  tab_size: 64,
  tab_colo: 11,
  tab_meta: 32,
  tab_asize: 48,
  tab_hmask: 52,
  node_size: 24,
  tv_size: 8,
  // GCfunc
  fn_ffid: 10,
  fn_nupvalues: 11,
  fn_pc: 32,
  fnL_size: 48,
  fnC_size: 56,
  ref_size: 8,
  // GCproto
  pt_sizept: 56,
  pt_chunkname: 64,
  pt_firstline: 72,
  /** the bytecode follows the GCproto header: a function's pc points into it */
  pt_header: 104,
  // GCupval
  uv_size: 48,
  // GCudata
  ud_size: 48,
  ud_len: 24,
  // GCcdata (GCcdataVar {uint16 offset, uint16 extra, uint32 len} right before it)
  cd_size: 16,
  cd_ctypeid: 10,
  cd_var_extra: -6,
  cd_var_len: -4,
  // lua_State
  th_size: 112,
  th_glref: 16,
  th_openupval: 64,
  th_stacksize: 88,
  // GCtrace
  tr_size: 120,
  tr_nsnap: 10,
  tr_nins: 12,
  tr_nk: 40,
  tr_nsnapmap: 44,
  irins_size: 8,
  snap_size: 12,
  snapentry_size: 4,
  // CTState / CType
  cts_tab: 0,
  cts_top: 8,
  ctype_size: 24,
  ctype_sizefield: 4,
};

/** the gct byte of each type (~LJ_T*) */
export const GCT = { str: 4, upval: 5, thread: 6, proto: 7, func: 8, trace: 9, cdata: 10, tab: 11, udata: 12 };
/** GC states (lj_gc.h) */
export const GCS = { pause: 0, propagate: 1, atomic: 2, sweepstring: 3, sweep: 4, finalize: 5 };

export const rdU16 = (a: number): number => rdU8(a) + rdU8(a + 1) * 256;

/** bytes a cdata's C type takes (lj_cdata_free: ctype_raw, then its size, or a pointer's if it has none); -1 when the id is out of range */
export function ctypeBytes(ctsTab: number, ctsTop: number, id: number): number {
  for (let hops = 0; hops < 8; hops++) {
    if (id >= ctsTop) return -1;
    const ct = ctsTab + id * LJ.ctype_size;
    const info = rdU32(ct);
    const t = Math.floor(info / 2 ** 28);
    if (t === 8) {
      // CT_ATTRIB: follow to its child type
      id = info % 65536;
      continue;
    }
    return t <= 5 ? rdU32(ct + LJ.ctype_sizefield) : 8;
  }
  return -1;
}

/** the object's bytes as the collector accounts them when it frees it (lj_*_free) */
export function tabBytes(o: number): number {
  const colo0 = rdU8(o + LJ.tab_colo);
  const colo = colo0 >= 128 ? colo0 - 256 : colo0;
  const asize = rdU32(o + LJ.tab_asize), hmask = rdU32(o + LJ.tab_hmask);
  let b = colo !== 0 ? LJ.tab_size + (colo0 % 128) * LJ.tv_size : LJ.tab_size;
  if (hmask > 0) b += (hmask + 1) * LJ.node_size;
  if (asize > 0 && colo <= 0) b += asize * LJ.tv_size;
  return b;
}

export interface VmRefs {
  g: number;
  mainthread: number;
}

let verdict: { refs?: VmRefs; error?: string } | undefined;

const addrIn = (s: string): number => {
  const [hex] = string.match(s, "0x(%x+)");
  return hex !== undefined ? tonumber(hex, 16)! : 0;
};

function check(): { refs?: VmRefs; error?: string } {
  if (!gc64) return { error: "non-GC64 LuaJIT: no verified object layout for it" };
  const L = threadAddr();
  if (L === undefined || L % 8 !== 0) return { error: "running thread's address unknown" };
  const g = rdPtr(L + LJ.th_glref);
  if (g === 0 || g % 8 !== 0) return { error: "lua_State.glref does not point at a global_State" };
  let totalOk = false;
  for (let i = 0; i < 3 && !totalOk; i++) totalOk = rdU64(g + LJ.gc_total) === collectgarbage("count") * 1024;
  if (!totalOk) return { error: "global_State.gc.total does not equal collectgarbage('count')" };
  const main = rdPtr(g + LJ.mainthref);
  if (main === 0 || rdPtr(main + LJ.th_glref) !== g || rdU8(main + LJ.gct) !== GCT.thread) return { error: "main thread does not point back at global_State" };
  const mask = rdU32(g + LJ.str_mask);
  if (((mask + 1) & mask) !== 0 || rdPtr(g + LJ.str_tab) === 0) return { error: "string table mask is not a power of two minus one" };

  // objects of known shape, read back
  const tn = (_G as unknown as { require: (this: void, m: string) => unknown }).require("table.new") as (this: void, a: number, h: number) => object;
  const mt = {};
  const t = setmetatable(tn(7, 5), mt);
  const ta = addrIn(tostring(t));
  if (rdU8(ta + LJ.gct) !== GCT.tab || rdU32(ta + LJ.tab_asize) !== 8 || rdU32(ta + LJ.tab_hmask) !== 7 || rdPtr(ta + LJ.tab_meta) !== addrIn(tostring(mt)))
    return { error: "a table's header does not read as made (gct, asize, hmask, metatable)" };
  if (tabBytes(ta) !== 64 + 8 * 8 + 8 * 24) return { error: "a table's size does not read as made (colocated array)" };
  const s = string.rep("m", 37) + tostring(ta);
  const sa = tonumber(ffi.cast("uintptr_t", ffi.cast("const char *", s)))! - LJ.str_size;
  if (rdU8(sa + LJ.gct) !== GCT.str || rdU32(sa + LJ.str_len) !== s.length) return { error: "a string's header does not read as made (gct, len)" };
  let u1 = 1, u2 = 2, u3 = 3;
  const f = () => u1 + u2 + u3;
  const fa = addrIn(tostring(f));
  if (rdU8(fa + LJ.gct) !== GCT.func || rdU8(fa + LJ.fn_ffid) !== 0 || rdU8(fa + LJ.fn_nupvalues) !== 3) return { error: "a closure's header does not read as made (gct, ffid, nupvalues)" };
  const pt = rdPtr(fa + LJ.fn_pc) - LJ.pt_header;
  if (rdU8(pt + LJ.gct) !== GCT.proto || rdU32(pt + LJ.pt_sizept) < LJ.pt_header) return { error: "a closure's prototype does not read as one" };
  const ud = newproxy(false);
  const ua = addrIn(tostring(ud)) - LJ.ud_size;
  if (rdU8(ua + LJ.gct) !== GCT.udata || rdU32(ua + LJ.ud_len) !== 0) return { error: "a userdata's header does not read as made (gct, len)" };
  const co = coroutine.create(f);
  const ca = addrIn(tostring(co));
  if (rdU8(ca + LJ.gct) !== GCT.thread || rdPtr(ca + LJ.th_glref) !== g || rdU32(ca + LJ.th_stacksize) === 0) return { error: "a coroutine's header does not read as made (gct, glref, stacksize)" };
  const cd = ffi.new("int32_t[3]");
  const cda = tonumber(ffi.cast("uintptr_t", cd))! - LJ.cd_size;
  const cts = rdPtr(g + LJ.ctype_state);
  if (rdU8(cda + LJ.gct) !== GCT.cdata || cts === 0) return { error: "a cdata's header does not read as made (gct)" };
  if (ctypeBytes(rdPtr(cts + LJ.cts_tab), rdU32(cts + LJ.cts_top), rdU16(cda + LJ.cd_ctypeid)) !== 12) return { error: "a cdata's C type does not read as made (int32_t[3], 12 bytes)" };
  // keep the probes alive until here
  if (u1 + u2 + u3 !== 6 || t === undefined || ud === undefined || co === undefined) return { error: "unreachable" };
  return { refs: { g, mainthread: main } };
}

/**
 * The VM's global_State and main thread once the layout verified in this VM (checked once per
 * worker: the layout cannot change under a running VM), else the reason it is refused.
 */
export function verifyLayout(): LuaMultiReturn<[VmRefs | undefined, string | undefined]> {
  if (verdict === undefined) {
    const [ok, v] = pcall(check);
    verdict = ok ? v : { error: `layout check failed: ${tostring(v)}` };
  }
  return $multi(verdict.refs, verdict.error);
}

/** offsets the reference walk (luavm/holders.ts) reads besides the census's */
export const LJR = {
  registrytv: 272,
  th_status: 11,
  th_base: 32,
  th_top: 40,
  th_stack: 56,
  th_env: 72,
  /** GCfunc env, GCudata env */
  env: 16,
  fnL_uvptr: 40,
  fnC_upvalue: 48,
  uv_v: 32,
  node_val: 0,
  node_key: 8,
  /** GCudata metatable is at the table's offset */
  meta: 32,
};

/**
 * A TValue (GC64): the GC object's address and its gct byte (4..12) when it holds one, else gct 0.
 * The type tag is the word's top 17 bits: ~gct in two's complement; the address its low 47 bits.
 */
export function tvObject(a: number): LuaMultiReturn<[number, number]> {
  const hi = rdU32(a + 4);
  const tag = Math.floor(hi / 32768);
  const t = 131071 - tag;
  if (t < GCT.str || t > GCT.udata) return $multi(0, 0);
  return $multi(rdU32(a) + (hi % 32768) * 4294967296, t);
}

/** A TValue holding a number (a double outside the tagged range): its value, else undefined */
export function tvNumber(a: number): number | undefined {
  const hi = rdU32(a + 4);
  if (Math.floor(hi / 32768) >= 131058) return undefined; // itype >= LJ_TISNUM: tagged, not a double
  return tonumber(ffi.cast("const double *", a)[0]);
}
