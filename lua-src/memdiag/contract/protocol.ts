/**
 * The wire contract between agents and the control plane (docs/protocol.md):
 * frame types, command names and the limits both sides rely on. Compiled for
 * the agent (typescript-to-lua) and the control plane (tsc), so a change here
 * reaches both; change docs/protocol.md and the tests with it.
 */
export { PROTOCOL_VERSION } from "./version";

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

/** bytes a snapshot envelope adds around the snapshot JSON, at most (reply_to ids are capped at MAX_ID) */
export const ENVELOPE_RESERVE = 512;
/** longest command id an agent accepts (and so echoes in reply_to) */
export const MAX_ID = 200;

/**
 * Commands the control plane may send, by what answers them: "snapshot" commands
 * (collect: a fresh snapshot now; deep: a deep scan, then its snapshot) are answered
 * by a snapshot frame with reply_to; "sampler" commands by one command_result
 * carrying `result` (the same JSON as /_memdiag?sampler=status|arm|disarm|top).
 * Arguments: sampler_arm {rate?, depth?, aligned?}, sampler_top {limit?, window_s?, min_age_s?}.
 */
export const COMMANDS = {
  collect: "snapshot",
  deep: "snapshot",
  sampler_status: "sampler",
  sampler_arm: "sampler",
  sampler_disarm: "sampler",
  sampler_top: "sampler",
} as const;
export type CommandName = keyof typeof COMMANDS;
export type SamplerCommand = "sampler_status" | "sampler_arm" | "sampler_disarm" | "sampler_top";

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
export interface CommandMsg {
  type: "command";
  id: string;
  command: CommandName;
  args?: Record<string, number | boolean>;
}
export type ServerToAgentMsg = WelcomeMsg | AckMsg | ErrorMsg | CommandMsg;
