/**
 * What the control plane speaks: the agent frames come from the shared contract
 * (lua-src/memdiag/contract/, compiled for the agent too; documented in
 * docs/protocol.md); the console and REST shapes below are the control plane's own.
 */
import type { CommandName } from "../../lua-src/memdiag/contract/protocol";

export { Close, COMMANDS, ENVELOPE_RESERVE, MAX_ID, PROTOCOL_VERSION } from "../../lua-src/memdiag/contract/protocol";
export type {
  AgentIdentity, HelloMsg, SnapshotMsg, CommandResultMsg, AgentMsg,
  WelcomeMsg, AckMsg, ErrorMsg, CommandMsg, ServerToAgentMsg, CommandName, SamplerCommand,
} from "../../lua-src/memdiag/contract/protocol";

// ---- control plane → consoles (ws path /live) ----
export interface LiveWorkerUpdate {
  type: "snapshot";
  worker: WorkerInfo;
  /** id of the stored snapshot (use GET /api/snapshots/:id for the full one) */
  snapshot_id: number;
  summary: SnapshotSummary;
}
export interface LiveWorkerGone {
  type: "worker_gone";
  worker: WorkerInfo;
}
export interface LiveSuspects {
  type: "suspects";
  suspects: Suspect[];
}
/** an agent answered a command sent with POST /api/workers/:key/command */
export interface LiveCommandResult {
  type: "command_result";
  /** the id POST returned */
  id: string;
  worker: string;
  command: CommandName;
  ok: boolean;
  error?: string;
}
export type LiveMsg = LiveWorkerUpdate | LiveWorkerGone | LiveSuspects | LiveCommandResult;

// ---- REST API shapes ----
export interface WorkerInfo {
  key: string;
  instance: string;
  host: string;
  pid: number;
  generation: number;
  worker_start: number;
  first_seen: number;
  last_seen: number;
  state: "live" | "gone";
  snapshots: number;
  last_snapshot_id?: number;
  rss_bytes?: number;
}

/** The numbers a chart needs, flattened from a snapshot (metric name → value). */
export interface SnapshotSummary {
  time: number;
  seq: number;
  metrics: Record<string, number>;
}

export interface DiffRow {
  /** stable key, e.g. "system.rss_bytes", "region.glibc_heap", "pool.unrooted.<sig>", "size_class.262144" */
  key: string;
  /** for humans, e.g. "unrooted pools held by ngx_http_x_module.so (.bss+0x40)" */
  label: string;
  section: "system" | "region" | "glibc" | "luajit" | "shm" | "pool" | "size_class";
  a_bytes: number;
  b_bytes: number;
  delta_bytes: number;
  /** relative change; null when a_bytes is 0 */
  delta_ratio: number | null;
  a_count?: number;
  b_count?: number;
  delta_count?: number;
}

export interface Diff {
  a: { id: number; time: number; worker?: string };
  b: { id: number; time: number; worker?: string };
  rows: DiffRow[];
}

export interface Suspect {
  /** what grows, e.g. "unrooted pools (create size 16384, cleanups: –)" */
  subject: string;
  /** module or layer that holds it */
  owner: string;
  growth_bytes_per_min: number;
  r2: number;
  /** one sentence a human can act on */
  evidence: string;
  metric: string;
  worker?: string;
  instance: string;
  window_s: number;
  delta_bytes: number;
  delta_count?: number;
  monotonic_ratio: number;
}

// ---- allocation call paths (GET /api/workers/:key/callpaths) ----
export interface CallpathFrame {
  pc: string | null;
  module: string | null;
  offset: string | null;
  build_id: string | null;
  path?: string | null;
  /** the worker's dladdr name (exported functions only) */
  name?: string | null;
  /** the name used: resolved, else module+offset */
  label: string;
  /** where `label`'s name came from; absent when unresolved */
  source?: "worker" | "symtab" | "dynsym" | "debug";
  /** "file.c:123" (only with ?lines=1, where the object or its debug file has DWARF line tables) */
  line?: string;
}
export interface Callpath {
  /** stable across fetches while the same code runs: allocation function + module+offset of every frame */
  key: string;
  fn: string;
  est_bytes: number;
  est_count: number;
  records: number;
  record_bytes: number;
  /** innermost first */
  frames: CallpathFrame[];
  /** outermost first, the allocation function last (FlameGraph) */
  folded: string;
}
export interface Callpaths {
  /** stored fetch id (use with /callpaths/diff) */
  id: number;
  worker: string;
  time: number;
  pid: number;
  paths_total: number;
  est_bytes_total: number;
  /** paths the worker left out to fit the frame limit */
  truncated_paths?: number;
  sampler: Record<string, unknown>;
  paths: Callpath[];
}
export interface CallpathDiffRow {
  key: string;
  fn: string;
  folded: string;
  frames: CallpathFrame[];
  a_bytes: number;
  b_bytes: number;
  delta_bytes: number;
  a_count: number;
  b_count: number;
  delta_count: number;
}
export interface CallpathDiff {
  a: { id: number; time: number; worker: string };
  b: { id: number; time: number; worker: string };
  rows: CallpathDiffRow[];
}
