/**
 * Sorting inside a sliced scan: table.sort of n items is one uninterruptible
 * O(n log n) step (10,000 ranges took several ms). slicedOrder sorts runs of RUN
 * items with table.sort, then merges runs bottom-up, calling `between` (a budget
 * check) after every run and every MERGE_CHECK moves. Pure: it reads only `keys`.
 */
const RUN = 512;
const MERGE_CHECK = 4096;

/** merge state at module level: no closure per call (the JIT guards on function identity) */
const SK: { keys: number[] } = { keys: [] };
function byKey(this: void, a: number, b: number): boolean {
  return SK.keys[a] < SK.keys[b];
}

/**
 * The indices 0..n-1 of `keys` in ascending key order (ties in any order).
 * `between` may yield: `keys` must not change while this runs.
 */
export function slicedOrder(keys: number[], between: (this: void) => void): number[] {
  const n = keys.length;
  let a: number[] = [];
  for (let i = 0; i < n; i++) a[i] = i;
  if (n <= 1) return a;
  // 1. sorted runs
  for (let s = 0; s < n; s += RUN) {
    const e = Math.min(n, s + RUN);
    const run: number[] = [];
    for (let i = s; i < e; i++) run.push(a[i]);
    SK.keys = keys;
    table.sort(run, byKey);
    SK.keys = [];
    for (let i = s; i < e; i++) a[i] = run[i - s];
    between();
  }
  // 2. bottom-up merges
  let b: number[] = [];
  let moves = 0;
  for (let width = RUN; width < n; width *= 2) {
    for (let lo = 0; lo < n; lo += 2 * width) {
      const mid = Math.min(n, lo + width);
      const hi = Math.min(n, lo + 2 * width);
      let i = lo;
      let j = mid;
      let k = lo;
      while (i < mid && j < hi) {
        if (keys[a[j]] < keys[a[i]]) b[k++] = a[j++];
        else b[k++] = a[i++];
        if (++moves % MERGE_CHECK === 0) between();
      }
      while (i < mid) {
        b[k++] = a[i++];
        if (++moves % MERGE_CHECK === 0) between();
      }
      while (j < hi) {
        b[k++] = a[j++];
        if (++moves % MERGE_CHECK === 0) between();
      }
    }
    const t = a;
    a = b;
    b = t;
  }
  return a;
}

/** LuaJIT's table.new when available (OpenResty's and 2.1's LuaJIT have it) */
const [tnOk, tnMod] = pcall(() => (_G as unknown as { require: (this: void, m: string) => unknown }).require("table.new"));
const tableNew = tnOk ? (tnMod as (this: void, narr: number, nrec: number) => unknown) : undefined;

/**
 * A hash table with room for `nrec` keys allocated at once: a table that grows key by
 * key rehashes at every doubling, and one rehash of a 0.5 M-key table is a single
 * uninterruptible step of ~100 ms (measured in LuaJIT). Sizing it up front costs one
 * allocation, done where the count is known (before the slices that fill it).
 */
export function newHash<K extends AnyNotNil, V>(nrec: number): LuaTable<K, V> {
  if (tableNew !== undefined && nrec > 0) return tableNew(0, Math.min(nrec, 16777216)) as LuaTable<K, V>;
  return new LuaTable<K, V>();
}
