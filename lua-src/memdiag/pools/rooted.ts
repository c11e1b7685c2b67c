import { Ctx } from "../context";
import { Layout } from "../layout/select";

export function collectRooted(_ctx: Ctx, layout: Layout | undefined, layoutError: string | undefined): { [k: string]: unknown } {
  if (!layout) return { available: false, error: layoutError };
  return { available: false, error: "rooted walk not implemented" };
}
