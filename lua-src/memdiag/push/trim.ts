import { arr, encode } from "../base/json";

/**
 * Shortens a snapshot's long lists until its JSON fits `limit` bytes, and says
 * which ones in `snapshot.trimmed`. Lists go in order of least value to a
 * diagnosis: example addresses of unrooted groups, their large-block
 * histograms, the largest-pools list, then the smallest regions, the smallest
 * shm zones, then the smallest unrooted groups. Within a list the smallest entries go first, so
 * the biggest consumers (what a leak hunt needs) stay. Pure Lua (no ngx).
 *
 * The input is not modified (other listeners may hold it): the containers on
 * the paths that get shortened are copied.
 */
type Obj = { [k: string]: unknown };

/** bytes kept free for the "trimmed" list itself */
const SLACK = 160;

function isTable(v: unknown): v is Obj {
  return type(v) === "table";
}

function shallow(t: Obj): Obj {
  const c: Obj = {};
  for (const [k, v] of pairs(t)) c[k as string] = v;
  const mt = getmetatable(t);
  if (mt !== undefined) setmetatable(c, mt as LuaMetatable<Obj>);
  return c;
}

function list(v: unknown): Obj[] | undefined {
  if (!isTable(v)) return undefined;
  return v as unknown as Obj[];
}

function encodedLen(v: unknown): number {
  const s = encode(v);
  return s === undefined ? 0 : s.length;
}

function num(v: unknown): number {
  return type(v) === "number" ? (v as number) : 0;
}

/** indexes of `items`, smallest `weight` first (ties: the later entry first) */
function smallestFirst(items: Obj[], weight: (this: void, o: Obj) => number): number[] {
  const idx: number[] = [];
  for (let i = 0; i < items.length; i++) idx.push(i);
  table.sort(idx, (a, b) => {
    const wa = weight(items[a]);
    const wb = weight(items[b]);
    return wa !== wb ? wa < wb : a > b;
  });
  return idx;
}

/**
 * Removes the entries of `items` with the smallest `weight` until `need` bytes
 * are gone or `min` entries remain; keeps the order of the rest. Returns the
 * new list and the bytes removed.
 */
function dropSmallest(items: Obj[], weight: (this: void, o: Obj) => number, min: number, need: number): LuaMultiReturn<[Obj[], number]> {
  const n = items.length;
  if (n <= min || need <= 0) return $multi(items, 0);
  const idx = smallestFirst(items, weight);
  const gone: { [i: number]: boolean } = {};
  let removed = 0;
  let left = n;
  for (const i of idx) {
    if (removed >= need || left <= min) break;
    gone[i] = true;
    removed += encodedLen(items[i]) + 1;
    left--;
  }
  const out: Obj[] = arr([]);
  for (let i = 0; i < n; i++) if (!gone[i]) out.push(items[i]);
  return $multi(out, removed);
}

const poolWeight = (o: Obj): number => num(o["block_bytes"]) + num(o["large_bytes"]);
const regionWeight = (o: Obj): number => num(o["bytes"]);
const shmWeight = (o: Obj): number => num(o["size_bytes"]);


interface Work {
  s: Obj;
  pools?: Obj;
  system?: Obj;
  /** copied unrooted groups (so their lists can be shortened) */
  groups?: Obj[];
}

type Stage = (this: void, w: Work, need: number) => number;

/**
 * A stage that shortens the list `field` of every unrooted group to its first `keep`
 * entries, smallest group first (the biggest groups keep their details longest).
 */
function groupListStage(name: string, field: string, keep: number): { name: string; run: Stage } {
  return {
    name,
    run: (w, need) => {
      let removed = 0;
      const gs = w.groups;
      if (!gs) return 0;
      for (const g of smallestFirst(gs, poolWeight)) {
        if (removed >= need) break;
        const l = list(gs[g][field]);
        if (!l || l.length <= keep) continue;
        const kept: unknown[] = arr([]);
        for (let i = 0; i < keep; i++) kept.push(l[i]);
        removed += encodedLen(l) - encodedLen(kept);
        gs[g][field] = kept;
      }
      return removed;
    },
  };
}

/** A stage that drops the smallest entries of one list (down to `min`), read and written through `at`. */
function listStage(name: string, weight: (this: void, o: Obj) => number, min: number, at: (this: void, w: Work) => Obj | undefined, field: string): { name: string; run: Stage } {
  return {
    name,
    run: (w, need) => {
      const holder = at(w);
      const items = holder ? list(holder[field]) : undefined;
      if (!holder || !items) return 0;
      const [out, removed] = dropSmallest(items, weight, min, need);
      holder[field] = out;
      return removed;
    },
  };
}

const stages: { name: string; run: Stage }[] = [
  groupListStage("pools.unrooted.examples", "examples", 1),
  groupListStage("pools.unrooted.large_histogram", "large_histogram", 0),
  listStage("pools.top", poolWeight, 0, (w) => w.pools, "top"),
  listStage("system.regions", regionWeight, 1, (w) => w.system, "regions"),
  // gateways with many lua_shared_dicts (Kong has ~20): the smallest zones go first
  listStage("shm", shmWeight, 1, (w) => w.s, "shm"),
  {
    name: "pools.unrooted",
    run: (w, need) => {
      const gs = w.groups;
      if (!gs) return 0;
      const [out, removed] = dropSmallest(gs, poolWeight, 1, need);
      w.groups = out;
      w.pools!["unrooted"] = out;
      return removed;
    },
  },
];

/**
 * JSON of `snap` no longer than `limit` bytes, and the names of the lists that
 * were shortened (also written to the copy's `trimmed`). Returns undefined JSON
 * when even the shortest form does not fit.
 */
export function trimToFit(snap: Obj, limit: number): LuaMultiReturn<[string | undefined, string[]]> {
  let json = encode(snap);
  if (json === undefined) return $multi(undefined, []);
  if (json.length <= limit) return $multi(json, []);

  const w: Work = { s: shallow(snap) };
  if (isTable(snap["pools"])) {
    w.pools = shallow(snap["pools"] as Obj);
    w.s["pools"] = w.pools;
    const un = list(w.pools["unrooted"]);
    if (un) {
      const gs: Obj[] = arr([]);
      for (const g of un) gs.push(isTable(g) ? shallow(g) : g);
      w.groups = gs;
      w.pools["unrooted"] = gs;
    }
  }
  if (isTable(snap["system"])) {
    w.system = shallow(snap["system"] as Obj);
    w.s["system"] = w.system;
  }
  const names: string[] = arr([]);
  const prior = list(snap["trimmed"]);
  if (prior) for (const p of prior) names.push(p as unknown as string);
  const used: { [n: string]: boolean } = {};
  for (const n of names) used[n] = true;

  for (let round = 0; round < 4; round++) {
    let need = json!.length - limit + SLACK;
    for (const st of stages) {
      if (need <= 0) break;
      const removed = st.run(w, need);
      if (removed > 0) {
        need -= removed;
        if (!used[st.name]) {
          used[st.name] = true;
          names.push(st.name);
        }
      }
    }
    w.s["trimmed"] = names;
    json = encode(w.s);
    if (json === undefined) return $multi(undefined, names);
    if (json.length <= limit) return $multi(json, names);
    if (need > 0) break; // every list is at its minimum
  }
  return $multi(undefined, names);
}
