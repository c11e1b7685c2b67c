import * as ffi from "ffi";
import { mapScratch, unmapScratch } from "./scratch";
import { Budget } from "../../base/slice";
import { monoMs } from "../../base/clock";
import { rdPtr, rdU32, rdU8 } from "../../safe/mem";
import { pinGc, unpinGc } from "../luajit/gc-hold";
import { gcMoved, markGc } from "./gc-marks";
import { GCT, LJ, LJR, VmRefs, ctypeBytes, rdU16, tabBytes, tvObject } from "./lj-layout";

/**
 * Who holds the Lua heap: a breadth-first walk of the object graph from the VM's roots (the
 * registry — package.loaded, _G, ngx_lua's running and pending coroutines — and the main
 * thread), through tables (array and hash parts, keys, metatables), functions (upvalues,
 * environments, prototypes), threads (their stacks) and userdata. Every object is reached
 * once, first by its shortest path from a root; the largest tables are reported with that
 * path ("package.loaded['app.cache'].by_key"), their slots, keys, own bytes, and the bytes of
 * everything the walk reached first through them (a lower bound of what they alone keep alive).
 *
 * Safety as in luavm/census.ts: the collector pinned, slices of ~1 ms, after every yield the
 * collector's marks compared before anything is touched (a change drops the walk), the cursor
 * inside a table an index, never a pointer into its parts (re-read after a yield; a table
 * resized meanwhile is scanned again from its start — children already reached are not added
 * twice). The queue and the visited set are C memory, allocated for the walk and freed after
 * it; the walk stops adding objects at MAX_NODES (reported as truncated).
 * References from weak tables are followed like strong ones.
 */


/** containers walked at most (tables, functions, threads, userdata); C memory: 72 bytes each, and 32 bytes per object in the visited set */
export const MAX_NODES = 1 << 22;
/** slots read between two budget checks */
const CHECK_EVERY = 256;
/** per node: address, parent, key (low word or number), key high word, edge kind, gct, own bytes, reached bytes, keys */
const STRIDE = 9;
const F_ADDR = 0, F_PARENT = 1, F_KEY = 2, F_KEYHI = 3, F_KIND = 4, F_GCT = 5, F_OWN = 6, F_REACHED = 7, F_KEYS = 8;
/** edge kinds */
const K_ROOT = 0, K_INDEX = 1, K_SKEY = 2, K_TVKEY = 3, K_META = 4, K_ENV = 5, K_UPVAL = 6, K_SLOT = 7, K_ASKEY = 8;

export interface HeldTable {
  /** the reference path from a root the walk reached it by first */
  path: string;
  /** the table's own bytes: header, array and hash parts */
  bytes: number;
  /** its bytes and those of every object reached first through it */
  reached_bytes: number;
  keys: number;
  array_slots: number;
  hash_slots: number;
}

/** coroutines grouped by the function they run (their bottom frame's) */
export interface ThreadGroup {
  /** "function <chunk>:<line>" (a pending timer's callback, a request handler, a user coroutine) */
  function: string;
  /** not started yet: a pending ngx.timer's callback with its arguments, or a coroutine never resumed */
  pending: number;
  /** started and yielded: a running timer or request waiting (sleep, cosocket), a user coroutine */
  suspended: number;
}

export interface Holders {
  tables: HeldTable[];
  /** the coroutines reached, by function, most first (at most TOP_THREADS) */
  threads: ThreadGroup[];
  /** containers walked (tables, functions, threads, userdata) and all objects reached */
  nodes: number;
  objects: number;
  truncated: boolean;
}

const STATE = { nodes: 0, cap: 0, setCap: 0 };
/** thread groups listed at most */
const TOP_THREADS = 10;
/** per entry function's address (a Lua table of numbers: a few entries, updated in place): [pending, suspended] */
let groups: { [fn: number]: [number, number] } = {};
let q: any; // double[cap * STRIDE]
let set: any; // double[setCap], 0 = empty

function slotOf(addr: number): number {
  // multiplicative hash on the address (objects are 8-aligned); deterministic in doubles
  let h = Math.floor((addr / 8) * 0.6180339887498949) % STATE.setCap;
  // the first probe outside the loop: most lookups end there, and a loop entered on every
  // call aborts the traces of the walk's loops that call it
  const v0 = set[h];
  if (v0 === 0 || v0 === addr) return h;
  return probeOn(addr, h);
}

function probeOn(addr: number, h: number): number {
  while (true) {
    const v = set[h];
    if (v === 0 || v === addr) return h;
    h = h + 1 === STATE.setCap ? 0 : h + 1;
  }
}

let objectsReached = 0;
let truncated = false;

/** reach an object from node `from` by an edge; leaves add their bytes to `from`, containers are queued */
function reach(o: number, t: number, from: number, kind: number, key: number, keyHi: number, cts: number): void {
  if (o === 0) return;
  const h = slotOf(o);
  if (set[h] === o) return;
  if (objectsReached >= STATE.setCap / 2) {
    truncated = true;
    return;
  }
  if (t === GCT.tab || t === GCT.func || t === GCT.thread || t === GCT.udata) {
    if (STATE.nodes >= STATE.cap) {
      truncated = true;
      return;
    }
    set[h] = o;
    objectsReached++;
    const b = STATE.nodes * STRIDE;
    q[b + F_ADDR] = o;
    q[b + F_PARENT] = from;
    q[b + F_KEY] = key;
    q[b + F_KEYHI] = keyHi;
    q[b + F_KIND] = kind;
    q[b + F_GCT] = t;
    q[b + F_OWN] = 0;
    q[b + F_REACHED] = 0;
    q[b + F_KEYS] = 0;
    STATE.nodes++;
    return;
  }
  set[h] = o;
  objectsReached++;
  let bytes = 0;
  if (t === GCT.str) {
    const len = rdU32(o + LJ.str_len);
    bytes = LJ.str_size + len + 4 - ((len + 4) % 4);
  } else if (t === GCT.cdata) {
    if (rdU8(o + LJ.marked) >= 128) bytes = rdU32(o + LJ.cd_var_len) + rdU16(o + LJ.cd_var_extra);
    else bytes = LJ.cd_size + Math.max(0, ctypeBytes(rdPtr(cts + LJ.cts_tab), rdU32(cts + LJ.cts_top), rdU16(o + LJ.cd_ctypeid)));
  } else if (t === GCT.proto) bytes = rdU32(o + LJ.pt_sizept);
  else if (t === GCT.upval) bytes = LJ.uv_size;
  q[from * STRIDE + F_REACHED] += bytes;
}

/** reach what the TValue at `a` holds */
function reachTv(a: number, from: number, kind: number, key: number, keyHi: number, cts: number): void {
  const [o, t] = tvObject(a);
  if (t !== 0) reach(o, t, from, kind, key, keyHi, cts);
}

function fnLabel(fn: number): string {
  if (rdU8(fn + LJ.fn_ffid) !== 0) return "C function";
  const pt = rdPtr(fn + LJ.fn_pc) - LJ.pt_header;
  const name = rdPtr(pt + LJ.pt_chunkname);
  const src = name !== 0 && rdU8(name + LJ.gct) === GCT.str ? ffi.string(ffi.cast("const char *", name + LJ.str_size), Math.min(rdU32(name + LJ.str_len), 80)) : "?";
  // chunk names start with "@" (a file) or "=" (a name given by the loader)
  const c = string.sub(src, 1, 1);
  return `function ${c === "@" || c === "=" ? string.sub(src, 2) : src}:${rdU32(pt + LJ.pt_firstline)}`;
}

function strAt(s: number, max: number): string {
  return ffi.string(ffi.cast("const char *", s + LJ.str_size), Math.min(rdU32(s + LJ.str_len), max));
}

const IDENT = "^[%a_][%w_]*$";

function segment(i: number): string {
  const b = i * STRIDE;
  const kind = q[b + F_KIND];
  const key = q[b + F_KEY];
  const parent = q[b + F_PARENT];
  const pb = parent * STRIDE;
  if (kind === K_INDEX) return `[${key + 1}]`;
  if (kind === K_SKEY) {
    const s = strAt(key, 64);
    return string.match(s, IDENT)[0] !== undefined ? `.${s}` : `[${string.format("%q", s)}]`;
  }
  if (kind === K_TVKEY) {
    const buf = ffi.new("uint32_t[2]", key, q[b + F_KEYHI]);
    const hi = q[b + F_KEYHI];
    const t = 131071 - Math.floor(hi / 32768);
    if (Math.floor(hi / 32768) < 131058) return `[${tostring(tonumber(ffi.cast("double *", buf)[0]))}]`;
    if (t === 1) return "[false]";
    if (t === 2) return "[true]";
    if (t === 3) return "[lightuserdata]";
    return `[<${TYPE[t] ?? "object"} key>]`;
  }
  if (kind === K_ASKEY) return ".<a key>";
  if (kind === K_META) return ".<metatable>";
  if (kind === K_ENV) return ".<env>";
  if (kind === K_UPVAL) return q[pb + F_GCT] === GCT.func ? ` upvalue ${key + 1} of <${fnLabel(q[pb + F_ADDR])}>` : ` upvalue ${key + 1}`;
  if (kind === K_SLOT) return `.<stack slot ${key}>`;
  return "";
}

function threadAddrOf(th: LuaThread): number {
  const [hex] = string.match(tostring(th), "0x(%x+)");
  return hex !== undefined ? tonumber(hex, 16)! : 0;
}

const LUA_YIELD = 1;

const TYPE: { [gct: number]: string } = { 4: "string", 6: "thread", 8: "function", 10: "cdata", 11: "table", 12: "userdata" };

function pathOf(i: number): string {
  const segs: string[] = [];
  let n = i;
  for (let d = 0; d < 64 && q[n * STRIDE + F_KIND] !== K_ROOT; d++) {
    segs.push(segment(n));
    n = q[n * STRIDE + F_PARENT];
  }
  segs.push(n === 0 ? "registry" : "<main thread>");
  segs.reverse();
  // registry._LOADED is package.loaded; package.loaded._G and the main thread's environment are _G
  let p = segs.join("");
  const [genv] = string.match(p, "^<main thread>%.<env>(.*)$");
  if (genv !== undefined) return `_G${genv}`;
  const [rest] = string.match(p, "^registry%._LOADED%._G(.*)$");
  if (rest !== undefined) return `_G${rest}`;
  const [mod, tail] = string.match(p, '^registry%._LOADED(%[".-"%])(.*)$');
  if (mod !== undefined) return `package.loaded${mod}${tail}`;
  const [mod2, tail2] = string.match(p, "^registry%._LOADED%.([%w_]+)(.*)$");
  if (mod2 !== undefined) return `package.loaded["${mod2}"]${tail2}`;
  if (string.sub(p, 1, 17) === "registry._LOADED") p = `package.loaded${string.sub(p, 17)}`;
  return p;
}

/**
 * Walk from the roots; `changed` says why the collector's marks no longer match after a yield.
 * Returns the error that stopped it, or undefined with the result filled.
 */
export function walkHolders(refs: VmRefs, budget: Budget, changed: () => string | undefined, top: number, objects: number, containers: number, out: { holders?: Holders }): string | undefined {
  const g = refs.g;
  const cts = rdPtr(g + LJ.ctype_state);
  // sized from the census's counts: containers (tables, functions, threads, userdata) for the
  // queue, all objects for the set, at most half full for its linear probing (what the
  // application allocates meanwhile is not walked past these bounds: truncated)
  STATE.cap = Math.min(MAX_NODES, Math.ceil(containers * 1.1) + 4096);
  STATE.setCap = 2 * Math.min(2 * MAX_NODES, objects + 4096);
  STATE.nodes = 0;
  groups = {};
  objectsReached = 0;
  truncated = false;
  const qm = mapScratch(STATE.cap * STRIDE * 8);
  const sm = qm && mapScratch(STATE.setCap * 8);
  if (qm === undefined || sm === undefined) {
    if (qm) unmapScratch(qm, budget);
    return "no memory for the walk";
  }
  q = ffi.cast("double *", qm.base);
  set = ffi.cast("double *", sm.base);
  try {
    // roots: the registry (node 0), the main thread (node 1)
    const [reg, rt] = tvObject(g + LJR.registrytv);
    if (rt !== GCT.tab) return "the registry is not a table";
    reach(reg, GCT.tab, 0, K_ROOT, 0, 0, cts);
    reach(refs.mainthread, GCT.thread, 0, K_ROOT, 0, 0, cts);
    const cur = coroutine.running() as LuaThread | undefined;
    const running = cur === undefined ? refs.mainthread : threadAddrOf(cur);
    let read = 0;
    const tick = (): string | undefined => {
      read++;
      if (read % CHECK_EVERY !== 0 || !budget.check()) return undefined;
      return changed();
    };
    for (let i = 0; i < STATE.nodes; i++) {
      const b = i * STRIDE;
      const o = q[b + F_ADDR];
      const t = q[b + F_GCT];
      if (t === GCT.tab) {
        let asize = rdU32(o + LJ.tab_asize), hmask = rdU32(o + LJ.tab_hmask);
        let arr = rdPtr(o + 16), node = rdPtr(o + 40);
        q[b + F_OWN] = tabBytes(o);
        const mt = rdPtr(o + LJR.meta);
        if (mt !== 0) reach(mt, GCT.tab, i, K_META, 0, 0, cts);
        let keys = 0;
        let j = 0;
        // the array part, then the hash part (j >= asize); restarted when the table changed size under a yield
        while (j < asize + (hmask > 0 ? hmask + 1 : 0)) {
          if (j < asize) {
            const a = arr + j * 8;
            if (rdU32(a + 4) !== 0xffffffff) {
              keys++;
              reachTv(a, i, K_INDEX, j, 0, cts);
            }
          } else {
            const nd = node + (j - asize) * LJ.node_size;
            if (rdU32(nd + LJR.node_val + 4) !== 0xffffffff) {
              keys++;
              const k = nd + LJR.node_key;
              const [ko, kt] = tvObject(k);
              if (kt === GCT.str) {
                reach(ko, kt, i, K_ASKEY, 0, 0, cts);
                reachTv(nd + LJR.node_val, i, K_SKEY, ko, 0, cts);
              } else {
                if (kt !== 0) reach(ko, kt, i, K_ASKEY, 0, 0, cts);
                reachTv(nd + LJR.node_val, i, K_TVKEY, rdU32(k), rdU32(k + 4), cts);
              }
            }
          }
          j++;
          const why = tick();
          if (why !== undefined) return why;
          if (read % CHECK_EVERY === 0 && (rdU32(o + LJ.tab_asize) !== asize || rdU32(o + LJ.tab_hmask) !== hmask || rdPtr(o + 16) !== arr || rdPtr(o + 40) !== node)) {
            asize = rdU32(o + LJ.tab_asize);
            hmask = rdU32(o + LJ.tab_hmask);
            arr = rdPtr(o + 16);
            node = rdPtr(o + 40);
            q[b + F_OWN] = tabBytes(o);
            keys = 0;
            j = 0;
          }
        }
        q[b + F_KEYS] = keys;
      } else if (t === GCT.func) {
        const nup = rdU8(o + LJ.fn_nupvalues);
        const lua = rdU8(o + LJ.fn_ffid) === 0;
        q[b + F_OWN] = lua ? LJ.fnL_size - LJ.ref_size + LJ.ref_size * nup : LJ.fnC_size - LJ.tv_size + LJ.tv_size * nup;
        reach(rdPtr(o + LJR.env), GCT.tab, i, K_ENV, 0, 0, cts);
        for (let u = 0; u < nup; u++) {
          if (lua) {
            const uv = rdPtr(o + LJR.fnL_uvptr + u * 8);
            if (uv === 0) continue;
            reach(uv, GCT.upval, i, K_UPVAL, u, 0, cts);
            reachTv(rdPtr(uv + LJR.uv_v), i, K_UPVAL, u, 0, cts);
          } else reachTv(o + LJR.fnC_upvalue + u * 8, i, K_UPVAL, u, 0, cts);
        }
        if (lua) reach(rdPtr(o + LJ.fn_pc) - LJ.pt_header, GCT.proto, i, K_UPVAL, 0, 0, cts);
      } else if (t === GCT.thread) {
        q[b + F_OWN] = (o === refs.mainthread ? 0 : LJ.th_size) + rdU32(o + LJ.th_stacksize) * LJ.tv_size;
        reach(rdPtr(o + LJR.th_env), GCT.tab, i, K_ENV, 0, 0, cts);
        // a thread's stack is valid up to its top when it does not run (suspended, not started —
        // a pending timer's callback and arguments —, or the main thread resuming from C); the
        // running one (ours) keeps its top only at calls into C, with stale slots of returned
        // frames below it: not followed. ngx_lua resumes coroutines from C, so every other thread
        // is at rest.
        if (o !== running) {
          const stack = rdPtr(o + LJR.th_stack), topp = rdPtr(o + LJR.th_top);
          if (o !== refs.mainthread) {
            // the entry function sits in slot 2 (two frame slots below it with GC64's FR2); not
            // started: status 0 with its base still there and the function (and arguments) above it
            const status = rdU8(o + LJR.th_status);
            const notStarted = status === 0 && rdPtr(o + LJR.th_base) === stack + 16 && topp > stack + 16;
            if (status === LUA_YIELD || notStarted) {
              const [fo, ft] = tvObject(stack + 16);
              if (ft === GCT.func) {
                const gr = groups[fo] ?? (groups[fo] = [0, 0]);
                gr[notStarted ? 0 : 1]++;
              }
            }
          }
          const n = Math.min((topp - stack) / 8, rdU32(o + LJ.th_stacksize));
          for (let s = 0; s < n; s++) reachTv(stack + s * 8, i, K_SLOT, s, 0, cts);
        }
      } else if (t === GCT.udata) {
        q[b + F_OWN] = LJ.ud_size + rdU32(o + LJ.ud_len);
        const mt = rdPtr(o + LJR.meta);
        if (mt !== 0) reach(mt, GCT.tab, i, K_META, 0, 0, cts);
        reach(rdPtr(o + LJR.env), GCT.tab, i, K_ENV, 0, 0, cts);
      }
      q[b + F_REACHED] += q[b + F_OWN];
      const why = tick();
      if (why !== undefined) return why;
    }
    // what each node reached first, summed up the BFS tree (children come after their parent)
    // (C memory only: a yield here needs no check of the collector)
    for (let i = STATE.nodes - 1; i > 1; i--) {
      const p = q[i * STRIDE + F_PARENT];
      q[p * STRIDE + F_REACHED] += q[i * STRIDE + F_REACHED];
      if (i % 4096 === 0) budget.check();
    }
    // the largest tables by own bytes, roots and the module tables themselves included
    const best: number[] = [];
    for (let i = 0; i < STATE.nodes; i++) {
      if (i % 4096 === 0) budget.check();
      if (q[i * STRIDE + F_GCT] !== GCT.tab) continue;
      const own = q[i * STRIDE + F_OWN];
      if (best.length < top || own > q[best[best.length - 1] * STRIDE + F_OWN]) {
        let k = best.length < top ? best.length : best.length - 1;
        while (k > 0 && q[best[k - 1] * STRIDE + F_OWN] < own) {
          best[k] = best[k - 1];
          k--;
        }
        best[k] = i;
      }
    }
    // labels read strings: in a slice of their own, and only while the collector is still as it was
    budget.reserve(budget.sliceMs / 2);
    const why = changed();
    if (why !== undefined) return why;
    const tables: HeldTable[] = [];
    for (const i of best) {
      const b = i * STRIDE;
      const o = q[b + F_ADDR];
      const hm = rdU32(o + LJ.tab_hmask);
      tables.push({
        path: pathOf(i), bytes: q[b + F_OWN], reached_bytes: q[b + F_REACHED], keys: q[b + F_KEYS],
        array_slots: rdU32(o + LJ.tab_asize), hash_slots: hm > 0 ? hm + 1 : 0,
      });
    }
    const threads: ThreadGroup[] = [];
    for (const [fn, [pending, suspended]] of pairs(groups)) threads.push({ function: fnLabel(fn), pending, suspended });
    table.sort(threads, (a, b) => a.pending + a.suspended > b.pending + b.suspended);
    while (threads.length > TOP_THREADS) threads.pop();
    out.holders = { tables, threads, nodes: STATE.nodes, objects: objectsReached, truncated };
    return undefined;
  } finally {
    q = undefined;
    set = undefined;
    groups = {};
    // C memory only: the pieces' yields need no check of the collector
    unmapScratch(qm, budget);
    unmapScratch(sm, budget);
  }
}

/** one walk with the collector pinned (see census.ts for the marks compared after each yield) */
export function runHolders(refs: VmRefs, budget: Budget, top: number, objects: number, containers: number, maxHoldMs: number): LuaMultiReturn<[Holders | undefined, string | undefined]> {
  const held = pinGc();
  const t0 = monoMs();
  const out: { holders?: Holders } = {};
  try {
    if (rdU32(refs.g + LJ.gc_threshold + 4) < 32768) return $multi(undefined, "the collector is running (could not be held)");
    const m = markGc(refs.g);
    const err = walkHolders(refs, budget, () => {
      if (monoMs() - t0 > maxHoldMs) return `the collector would stay held longer than ${maxHoldMs} ms`;
      return gcMoved(refs.g, m);
    }, top, objects, containers, out);
    return $multi(out.holders, err);
  } finally {
    if (held) unpinGc();
  }
}
