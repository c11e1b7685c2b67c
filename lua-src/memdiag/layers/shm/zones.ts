/**
 * nginx shared memory zones: cycle->shared_memory (an ngx_list_t of ngx_shm_zone_t),
 * each backed by a slab pool at shm.addr. Free space is the slab pool's free pages
 * (pfree × pagesize — the figure lua-nginx-module's shdict:free_space() reports);
 * used = zone size − free, i.e. capacity() − free_space(), slab headers included.
 * The owner is the module whose struct the zone is tagged with, else the module
 * that holds the zone's init handler.
 */
import { Ctx, skip } from "../../base/context";
import { Layout, off, sizeOf } from "../../nginx/types";
import { cycleAddr, pagesize } from "../../nginx/identity";
import { rdNgxStr, rdPtr, rdU64 } from "../../safe/mem";
import { symbolize } from "../../base/symbols";
import { LIMITS, rangeReadable } from "../../nginx/validate";
import { jitLib } from "../../base/nojit";
import { readSlab, SlabInfo } from "./slab-classes";
import { countDictKeys, DictKeys } from "./lua-dict";

// once a second, not hot enough to pay back its traces (base/nojit.ts jitLib)
jitLib?.off?.(true, true);

export interface ShmZone {
  name: string;
  size_bytes: number;
  used_bytes?: number;
  free_bytes?: number;
  owner?: string;
  error?: string;
  slab?: SlabInfo;
  slab_error?: string;
  /** lua_shared_dict zones */
  dict?: DictKeys;
  /** not serialised: where the zone is mapped, for region classification */
  addr?: number;
}

function ownerOf(tag: number, init: number): string | undefined {
  if (tag !== 0) {
    const t = symbolize(tag);
    const [mod] = string.match(t.name, "^([%w_]+_module)$");
    if (t.exact && mod !== undefined) return mod;
  }
  if (init !== 0) {
    const s = symbolize(init);
    if (s.exact) return s.module !== "" ? `${s.name} (${s.module})` : s.name;
    if (s.module !== "") return s.module;
  }
  return undefined;
}

export function collectShm(ctx: Ctx, layout: Layout | undefined): ShmZone[] {
  const out: ShmZone[] = [];
  if (!layout) return out;
  const L = layout;
  const maps = ctx.maps;
  const cycle = cycleAddr();
  if (!maps.readable(cycle, sizeOf(L, "ngx_cycle_t"))) {
    skip(ctx, "shm_cycle_unreadable");
    return out;
  }
  const list = cycle + off(L, "ngx_cycle_t", "shared_memory");
  const zSize = sizeOf(L, "ngx_shm_zone_t");
  if (rdU64(list + off(L, "ngx_list_t", "size")) !== zSize) {
    skip(ctx, "shm_list_bad_size");
    return out;
  }
  const zAddr = off(L, "ngx_shm_zone_t", "shm.addr");
  const zSz = off(L, "ngx_shm_zone_t", "shm.size");
  const zName = off(L, "ngx_shm_zone_t", "shm.name");
  const zInit = off(L, "ngx_shm_zone_t", "init");
  const zTag = off(L, "ngx_shm_zone_t", "tag");
  const spSize = sizeOf(L, "ngx_slab_pool_t");
  const spPfree = off(L, "ngx_slab_pool_t", "pfree");
  const spStart = off(L, "ngx_slab_pool_t", "start");
  const spEnd = off(L, "ngx_slab_pool_t", "end");
  const spAddr = off(L, "ngx_slab_pool_t", "addr");
  const nalloc = rdU64(list + off(L, "ngx_list_t", "nalloc"));
  const ps = pagesize();

  // the first part is embedded in the list header
  const pElts = off(L, "ngx_list_part_t", "elts");
  let part = list + off(L, "ngx_list_t", "part.elts") - pElts;
  const pNelts = off(L, "ngx_list_part_t", "nelts");
  const pNext = off(L, "ngx_list_part_t", "next");
  const pSize = sizeOf(L, "ngx_list_part_t");
  let parts = 0;
  let zones = 0;
  while (part !== 0) {
    if (parts >= LIMITS.MAX_SHM_PARTS || !maps.readable(part, pSize)) {
      skip(ctx, "shm_list_part_invalid");
      break;
    }
    const elts = rdPtr(part + pElts);
    const nelts = rdU64(part + pNelts);
    if (nelts > nalloc || (nelts > 0 && !rangeReadable(maps, elts, nelts * zSize))) {
      skip(ctx, "shm_list_part_invalid");
      break;
    }
    for (let i = 0; i < nelts; i++) {
      if (zones >= LIMITS.MAX_SHM_ZONES) break;
      zones++;
      const z = elts + i * zSize;
      const addr = rdPtr(z + zAddr);
      const size = rdU64(z + zSz);
      const name = rdNgxStr(maps, z + zName, 256);
      if (name === undefined) {
        skip(ctx, "shm_zone_bad_name");
        continue;
      }
      const zone: ShmZone = { name, size_bytes: size, owner: ownerOf(rdPtr(z + zTag), rdPtr(z + zInit)) };
      out.push(zone);
      if (addr === 0) {
        zone.error = "zone not mapped";
        continue;
      }
      zone.addr = addr;
      // the slab pool header: end = addr + size, addr = zone address, pages inside
      if (!maps.readable(addr, spSize)) {
        zone.error = "slab pool header not readable";
        skip(ctx, "shm_slab_unreadable");
        continue;
      }
      const start = rdPtr(addr + spStart);
      const end = rdPtr(addr + spEnd);
      const pfree = rdU64(addr + spPfree);
      if (end !== addr + size || rdPtr(addr + spAddr) !== addr || start <= addr || start > end) {
        zone.error = "not a slab pool (header invariants fail)";
        skip(ctx, "shm_slab_invalid");
        continue;
      }
      const pages = Math.floor((end - start) / ps);
      if (pfree > pages) {
        zone.error = "slab pool free page count out of range";
        skip(ctx, "shm_slab_invalid");
        continue;
      }
      zone.free_bytes = pfree * ps;
      zone.used_bytes = size - zone.free_bytes;
      const [slab, slabError] = readSlab(L, addr, size, ps);
      zone.slab = slab;
      zone.slab_error = slabError;
      if (slab && zone.owner === "ngx_http_lua_module") zone.dict = countDictKeys(ctx, rdPtr(addr + off(L, "ngx_slab_pool_t", "data")), start, end);
    }
    const nx = rdPtr(part + pNext);
    if (nx === part) {
      skip(ctx, "shm_list_cycle");
      break;
    }
    part = nx;
    parts++;
  }
  return out;
}
