/**
 * Keys of a lua_shared_dict, counted by following its LRU queue in shared memory — not
 * get_keys(), which locks the dict for the whole copy and builds a Lua table of every key.
 *
 * lua-nginx-module's structures (ngx_http_lua_shdict.h), not in nginx's layout file, so
 * checked on every read: the slab pool's data points at the dict's shctx {ngx_rbtree_t
 * rbtree; ngx_rbtree_node_t sentinel; ngx_queue_t lru_queue}, and rbtree.sentinel must point at
 * shctx.sentinel; every entry is an ngx_rbtree_node_t whose colour byte starts the dict node
 * {color, value_type, key_len, value_len, expires, queue, ...}, so an entry's queue link lies
 * EXPIRES_TO_QUEUE bytes after its expiry time.
 *
 * Without the dict's mutex (other workers write meanwhile): every link followed must lie inside
 * the zone's slab pages and point back at the entry it came from, the walk is bounded by the
 * entries the pool can hold and by MAX_ENTRIES, and between slices (ctx ticks) the entry it
 * stands on must still be linked both ways. Any failed check gives no count this time, with the
 * reason; a dict that only changes elsewhere may still be counted one entry off, never crash us.
 * Expired entries stay in the queue until a write or the expiry sweep removes them: counted
 * apart, they hold memory too.
 */
import { Ctx, tick } from "../../base/context";
import { rdPtr, rdU64 } from "../../safe/mem";

/** ngx_rbtree_t {root, sentinel, insert}, then the sentinel ngx_rbtree_node_t (40 bytes on 64-bit) */
const RBTREE_SENTINEL_PTR = 8;
const SHCTX_SENTINEL = 24;
const SHCTX_LRU = 64;
/** ngx_http_lua_shdict_node_t: expires (uint64) is right before queue */
const EXPIRES_TO_QUEUE = 8;
/** smallest entry: rbtree node (40) + dict node header up to data (32) */
const MIN_ENTRY = 72;
/** entries followed at most in one collection; a bigger dict gets no count (keys_error) */
export const MAX_ENTRIES = 100000;
/** entries between two budget checks */
const CHECK_EVERY = 256;

export interface DictKeys {
  keys?: number;
  /** of keys: entries past their expiry not yet removed */
  expired?: number;
  keys_error?: string;
}

/**
 * `shctx`: the slab pool's data word; [lo, hi) the zone's slab pages (start .. end).
 * Only for zones of ngx_http_lua_module (lua_shared_dict).
 */
export function countDictKeys(ctx: Ctx, shctx: number, lo: number, hi: number): DictKeys {
  const inside = (a: number): boolean => a >= lo && a + 16 <= hi && a % 8 === 0;
  if (!inside(shctx) || !inside(shctx + SHCTX_LRU)) return { keys_error: "dict header not inside the zone" };
  if (rdPtr(shctx + RBTREE_SENTINEL_PTR) !== shctx + SHCTX_SENTINEL) return { keys_error: "not a lua_shared_dict (rbtree sentinel check)" };
  const head = shctx + SHCTX_LRU;
  const cap = Math.min(MAX_ENTRIES, Math.floor((hi - lo) / MIN_ENTRY) + 1);
  const nowMs = ngx.now() * 1000;
  let prev = head;
  let q = rdPtr(head + 8);
  let keys = 0, expired = 0;
  while (q !== head) {
    if (!inside(q) || rdPtr(q) !== prev) return { keys_error: "the dict changed while its keys were counted" };
    if (keys >= cap) return { keys_error: `more than ${cap} entries: not counted` };
    keys++;
    const exp = rdU64(q - EXPIRES_TO_QUEUE);
    if (exp !== 0 && exp <= nowMs) expired++;
    prev = q;
    q = rdPtr(q + 8);
    if (keys % CHECK_EVERY === 0 && tick(ctx)) {
      // other code ran: the entry we stand on must still be in the queue
      const p = rdPtr(prev), n = rdPtr(prev + 8);
      if (!inside(p) && p !== head) return { keys_error: "the dict changed while its keys were counted" };
      if (!inside(n) && n !== head) return { keys_error: "the dict changed while its keys were counted" };
      if (rdPtr(n) !== prev || rdPtr(p + 8) !== prev) return { keys_error: "the dict changed while its keys were counted" };
      q = n;
    }
  }
  return { keys, expired };
}
