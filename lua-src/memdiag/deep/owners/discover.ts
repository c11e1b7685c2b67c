import { Ctx, skip, tick } from "../../base/context";
import { rdPtr } from "../../safe/mem";
import { looksLikePoolHead, newPoolStats, PoolMemory, PoolOffsets, PoolStats, walkPool } from "../../nginx/pool-walk";
import { noJit } from "../../base/nojit";

/**
 * Heap-wide pool discovery: the candidates the heap walk pre-filtered are checked
 * against the full pool header invariants (looksLikePoolHead, a readable log,
 * `current` pointing into the pool's own block chain) and walked with the shared
 * validated walker. A candidate that fails is skipped and counted, whatever its
 * lists look like.
 */
export interface FoundPool {
  addr: number;
  st: PoolStats;
  mem: PoolMemory;
  /** cleanup handler address → count */
  handlers: LuaTable<number, number>;
  log: number;
  /** "cycle" | "connection" | "request" when the rooted walk reaches it */
  rooted?: string;
}

export function discoverPools(
  ctx: Ctx,
  P: PoolOffsets,
  candidates: number[],
  pagesize: number,
  rooted: LuaTable<number, string>,
): FoundPool[] {
  const found: FoundPool[] = [];
  for (let i = 0; i < candidates.length; i++) {
    // a candidate costs a header check, a list walk and a few tables (~10-20 us, more while
    // the JIT compiles the walk's traces, several in the first candidates of a scan): a check
    // per candidate (~0.1 us) lets the budget yield between two of those compiles
    tick(ctx);
    const a = candidates[i];
    if (!looksLikePoolHead(ctx, P, a, pagesize)) {
      skip(ctx, "pool_candidate_header");
      continue;
    }
    const log = rdPtr(a + P.log);
    // ctx.maps, not a local copy: tick() replaces it after a yield
    if (!ctx.maps.readable(log, 8)) {
      skip(ctx, "pool_candidate_log");
      continue;
    }
    const st = newPoolStats();
    const mem: PoolMemory = { blocks: [], blockLast: [], larges: [], largeSizes: [] };
    const handlers = new LuaTable<number, number>();
    if (!walkPool(ctx, P, a, st, handlers, mem)) {
      // walkPool counted the precise reason
      skip(ctx, "pool_candidate_lists");
      continue;
    }
    const current = rdPtr(a + P.current);
    let inChain = false;
    for (const b of mem.blocks) {
      if (b === current) {
        inChain = true;
        break;
      }
    }
    if (!inChain) {
      skip(ctx, "pool_candidate_current");
      continue;
    }
    // every block must be wholly readable: the reference scan reads them
    let ok = true;
    for (const b of mem.blocks) {
      if (!ctx.maps.readable(b, st.create_size)) {
        ok = false;
        break;
      }
    }
    if (!ok) {
      skip(ctx, "pool_candidate_block_unreadable");
      continue;
    }
    found.push({ addr: a, st, mem, handlers, log, rooted: rooted.get(a) });
  }

  // a later block of one pool is never a pool head of its own; a block or large
  // allocation claimed by two pools means one of them is garbage: keep the first
  const owner = new LuaTable<number, number>();
  const out: FoundPool[] = [];
  const secondary = new LuaTable<number, boolean>();
  // (no memory is read below: budget checks cannot invalidate anything)
  for (let i = 0; i < found.length; i++) {
    const p = found[i];
    for (let j = 1; j < p.mem.blocks.length; j++) secondary.set(p.mem.blocks[j], true);
    if (i % 128 === 127) tick(ctx);
  }
  for (let i = 0; i < found.length; i++) {
    if (i % 128 === 127) tick(ctx);
    const p = found[i];
    if (secondary.get(p.addr)) {
      skip(ctx, "pool_candidate_is_block");
      continue;
    }
    let clash = false;
    for (const b of p.mem.blocks) if (owner.get(b) !== undefined) clash = true;
    for (const l of p.mem.larges) if (owner.get(l) !== undefined) clash = true;
    if (clash) {
      skip(ctx, "pool_candidate_overlap");
      continue;
    }
    for (const b of p.mem.blocks) owner.set(b, i);
    for (const l of p.mem.larges) owner.set(l, i);
    out.push(p);
  }
  return out;
}

noJit(discoverPools);
