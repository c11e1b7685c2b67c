import { rdPtr, rdU32, rdU64, rdU8 } from "../../safe/mem";
import { gcCycles } from "./gc-floor";
import { LJ } from "./lj-layout";

/**
 * What a walk of the held Lua heap compares after each of its yields: if any of these moved,
 * the collector ran in between (the application's collectgarbage("collect"/"step"/"restart"),
 * or a hold released) and objects the walk stands on may have been freed.
 */
export interface GcMark {
  threshold: number;
  state: number;
  sweep: number;
  sweepstr: number;
  cycles: number;
}

export function markGc(g: number): GcMark {
  return {
    threshold: rdU64(g + LJ.gc_threshold),
    state: rdU8(g + LJ.gc_state),
    sweep: rdPtr(g + LJ.gc_sweep),
    sweepstr: rdU32(g + LJ.gc_sweepstr),
    cycles: gcCycles(),
  };
}

/** undefined while the collector is as marked, else what changed */
export function gcMoved(g: number, m: GcMark): string | undefined {
  if (rdU64(g + LJ.gc_threshold) !== m.threshold) return "the collector's threshold changed (collectgarbage step/restart/collect)";
  if (rdU8(g + LJ.gc_state) !== m.state || rdPtr(g + LJ.gc_sweep) !== m.sweep || rdU32(g + LJ.gc_sweepstr) !== m.sweepstr) return "the collector ran";
  if (gcCycles() !== m.cycles) return "a GC cycle completed";
  return undefined;
}
