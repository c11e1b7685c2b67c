import { Ctx, tick } from "../../base/context";
import { hex } from "../../safe/mem";
import { symbolize } from "../../base/symbols";
import { arr } from "../../base/json";
import { log2floor } from "../heap/walk";
import { FoundPool } from "./discover";
import { PoolTotals, totalsOut } from "../../nginx/pool-walk";
import { noJit } from "../../base/nojit";
import type { OwnerResult } from "./owners";

interface Group extends PoolTotals {
  signature: string;
  create_size: number;
  hist: LuaTable<number, [number, number]>;
  cleanups: LuaTable<string, number>;
  log: string;
  owner: string;
  /** the pool whose retainer path the group reports (the shortest), and its depth */
  retainerK: number;
  depth: number;
  rootRef: number;
  examples: string[];
  others: { owner: string; at: number; pools: number }[];
}

function logName(log: number, cycleLog: number): string {
  if (log === cycleLog) return "cycle->log";
  const s = symbolize(log);
  if (s.module !== "") return s.name;
  return "heap";
}

/**
 * Group unrooted pools by a stable signature: creation size, cleanup handler
 * names, log pointer name and owner. Largest groups first.
 */
export function groupUnrooted(ctx: Ctx, pools: FoundPool[], own: OwnerResult, cycleLog: number): object[] {
  const groups = new LuaTable<string, Group>();
  const order: Group[] = [];
  for (let k = 0; k < pools.length; k++) {
    if (k % 256 === 255) tick(ctx);
    const p = pools[k];
    if (p.rooted !== undefined) continue;
    const names: string[] = [];
    const counts = new LuaTable<string, number>();
    for (const [h, c] of p.handlers) {
      const nm = symbolize(h).name;
      if (counts.get(nm) === undefined) names.push(nm);
      counts.set(nm, (counts.get(nm) ?? 0) + c);
    }
    table.sort(names);
    const log = logName(p.log, cycleLog);
    const owner = own.owner.get(k) ?? "unreferenced";
    const key = `${p.st.create_size}|${names.join(",")}|${log}|${owner}`;
    let g = groups.get(key);
    if (g === undefined) {
      g = {
        signature: string.sub(ngx.md5(key), 1, 16),
        create_size: p.st.create_size,
        pools: 0,
        blocks: 0,
        block_bytes: 0,
        used_bytes: 0,
        large_blocks: 0,
        large_bytes: 0,
        hist: new LuaTable(),
        cleanups: new LuaTable(),
        log,
        owner,
        retainerK: k,
        depth: own.depth.get(k) ?? 0,
        rootRef: own.rootRef.get(k) ?? 0,
        examples: [],
        others: [],
      };
      groups.set(key, g);
      order.push(g);
    }
    g.pools++;
    g.blocks += p.st.blocks;
    g.block_bytes += p.st.block_bytes;
    g.used_bytes += p.st.used_bytes;
    g.large_blocks += p.st.large_blocks;
    g.large_bytes += p.st.large_bytes;
    for (const sz of p.mem.largeSizes) {
      const c = log2floor(sz);
      const e = g.hist.get(c) ?? [0, 0];
      e[0]++;
      e[1] += sz;
      g.hist.set(c, e);
    }
    for (const nm of names) g.cleanups.set(nm, (g.cleanups.get(nm) ?? 0) + counts.get(nm)!);
    const d = own.depth.get(k);
    if (d !== undefined && d < g.depth) {
      g.depth = d;
      g.retainerK = k;
      g.rootRef = own.rootRef.get(k) ?? 0;
    }
    if (g.examples.length < 8) g.examples.push(hex(p.addr));
    const al = own.alt.get(k);
    if (al !== undefined) {
      for (const a of al) {
        let dup = false;
        for (const o of g.others) if (o.at === a.at) dup = true;
        if (!dup && g.others.length < 4) g.others.push(a);
      }
    }
  }
  table.sort(order, (a, b) => a.block_bytes + a.large_bytes > b.block_bytes + b.large_bytes);
  const out: object[] = [];
  for (const g of order) {
    const hist: object[] = [];
    for (let c = 0; c < 64; c++) {
      const e = g.hist.get(c);
      if (e !== undefined) hist.push({ min_bytes: 2 ** c, max_bytes: 2 ** (c + 1) - 1, count: e[0], bytes: e[1] });
    }
    const cleanups: object[] = [];
    for (const [h, c] of g.cleanups) cleanups.push({ handler: h, count: c });
    table.sort(cleanups as { handler: string }[], (a, b) => a.handler < b.handler);
    const o = totalsOut(g);
    o.signature = g.signature;
    o.create_size = g.create_size;
    o.large_histogram = arr(hist);
    o.cleanups = arr(cleanups);
    o.log = g.log;
    o.owner = g.owner;
    o.retainer = own.retainerOf(g.retainerK);
    o.root_ref = g.rootRef !== 0 ? hex(g.rootRef) : undefined;
    o.other_roots = g.others.length > 0 ? arr(g.others.map((x) => ({ owner: x.owner, root_ref: hex(x.at), pools: x.pools }))) : undefined;
    o.examples = arr(g.examples);
    out.push(o);
  }
  return out;
}

noJit(groupUnrooted);

