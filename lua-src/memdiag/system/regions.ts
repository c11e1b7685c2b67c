import { Ctx } from "../context";
import { ShmZone } from "../shm/zones";

export interface Region {
  class: string;
  name?: string;
  bytes: number;
  rss_bytes?: number;
  mappings: number;
}

/** stub: classification of mappings (filled by the regions work) */
export function collectRegions(_ctx: Ctx, _zones: ShmZone[], _rss: number): LuaMultiReturn<[Region[], number]> {
  return $multi([], 0);
}
