import { encode } from "../util/json";

/**
 * Agent → control plane messages (control-plane/src/protocol.ts). The snapshot
 * JSON is spliced in as text: it was encoded once by the agent and is never
 * decoded or re-encoded for sending. Pure Lua (no ngx).
 */
export const PROTOCOL_VERSION = 1;

/** bytes a snapshot envelope adds around the snapshot JSON, at most (reply_to ids are capped at MAX_ID) */
export const ENVELOPE_RESERVE = 512;
export const MAX_ID = 200;

export function snapshotFrame(seq: number, json: string, reply_to: string | undefined, dropped: number | undefined): string {
  const parts: string[] = [`{"type":"snapshot","seq":${string.format("%d", seq)}`];
  if (reply_to !== undefined) parts.push(`,"reply_to":${encode(reply_to)}`);
  if (dropped !== undefined && dropped > 0) parts.push(`,"dropped":${string.format("%d", dropped)}`);
  parts.push(',"snapshot":', json, "}");
  return table.concat(parts);
}

export interface HelloAgent {
  host: string;
  instance: string;
  pid: number;
  worker_id?: number;
  worker_start: number;
  generation: number;
  nginx_version: string;
  agent_version: string;
}

export function helloFrame(token: string, agent: HelloAgent): string {
  return encode({ type: "hello", protocol: PROTOCOL_VERSION, token, agent })!;
}

export function commandResultFrame(id: string, ok: boolean, err?: string): string {
  return encode({ type: "command_result", id, ok, error: err })!;
}
