import { Ctx } from "../context";
import { Layout } from "../layout/select";

export interface ShmZone {
  name: string;
  size_bytes: number;
  used_bytes?: number;
  free_bytes?: number;
  owner?: string;
  error?: string;
  /** not serialised: where the zone is mapped, for region classification */
  addr?: number;
}

export function collectShm(_ctx: Ctx, _layout: Layout | undefined): ShmZone[] {
  return [];
}
