/**
 * The wire contract between agents, control plane and consoles (documented in
 * docs/protocol.md). Agents are Lua (lua-src/memdiag/push/), so this file is the
 * reference both sides follow; change it only together with docs/protocol.md,
 * the agent and the tests.
 */

export const PROTOCOL_VERSION = 1;

/** WebSocket close codes the control plane uses (4000–4999 are application codes). */
export const Close = {
  /** repeated malformed or schema-violating frames */
  BAD_FRAMES: 4400,
  /** missing or wrong token in hello */
  UNAUTHORIZED: 4401,
  /** first frame was not a hello, or hello timed out */
  HELLO_REQUIRED: 4402,
  /** unknown message type */
  UNKNOWN_TYPE: 4415,
  /** frame above max size (ws also uses 1009) */
  TOO_LARGE: 1009,
} as const;

/** Who a worker is; sent once in hello. `key` on the server side is instance/pid/worker_start. */
export interface AgentIdentity {
  host: string;
  instance: string;
  pid: number;
  worker_id?: number;
  worker_start: number;
  generation: number;
  nginx_version: string;
  agent_version: string;
}

// ---- agent → control plane (ws path /ingest) ----
export interface HelloMsg {
  type: "hello";
  protocol: number;
  /** shared secret; never in the URL */
  token: string;
  agent: AgentIdentity;
}
export interface SnapshotMsg {
  type: "snapshot";
  /** agent-side sequence (snapshot.seq); acked by the control plane once stored */
  seq: number;
  /** set when the snapshot answers a command */
  reply_to?: string;
  /** snapshots the agent dropped from its queue since the last one it sent (control plane away) */
  dropped?: number;
  snapshot: Record<string, unknown>;
}
export interface CommandResultMsg {
  type: "command_result";
  id: string;
  ok: boolean;
  error?: string;
  /** sampler commands: the answer (same JSON as /_memdiag?sampler=status|arm|disarm|top) */
  result?: Record<string, unknown>;
}
export type AgentMsg = HelloMsg | SnapshotMsg | CommandResultMsg;

// ---- control plane → agent ----
export interface WelcomeMsg {
  type: "welcome";
  worker_key: string;
  /** the control plane's max accepted frame size; agents trim to stay below */
  max_frame_bytes: number;
}
/** Sent after the snapshot is committed to storage: the agent may drop it from its queue. */
export interface AckMsg {
  type: "ack";
  seq: number;
}
/** A frame was rejected; nothing stored. After `max_bad_frames` in a row the socket is closed with 4400. */
export interface ErrorMsg {
  type: "error";
  seq?: number;
  error: string;
}
/** Commands answered by a command_result carrying `result` (allocation sampler, issue 5). */
export type SamplerCommand = "sampler_status" | "sampler_arm" | "sampler_disarm" | "sampler_top";
export const SAMPLER_COMMANDS: readonly SamplerCommand[] = ["sampler_status", "sampler_arm", "sampler_disarm", "sampler_top"];
export type CommandName = "collect" | "deep" | SamplerCommand;
/**
 * collect: send a fresh snapshot now; deep: run a deep scan and send its snapshot;
 * sampler_*: see SamplerCommand (args: sampler_arm {rate?, depth?, aligned?}, sampler_top {limit?, window_s?, min_age_s?})
 */
export interface CommandMsg {
  type: "command";
  id: string;
  command: CommandName;
  args?: Record<string, number | boolean>;
}
export type ServerToAgentMsg = WelcomeMsg | AckMsg | ErrorMsg | CommandMsg;

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
