import { encode } from "../base/json";
import { AgentIdentity } from "../contract/protocol";
import { PROTOCOL_VERSION } from "../contract/version";

/**
 * Agent → control plane frames (contract/protocol.ts, docs/protocol.md). The snapshot
 * JSON is spliced in as text: it was encoded once by the agent and is never
 * decoded or re-encoded for sending. Pure Lua (no ngx).
 */

export function snapshotFrame(seq: number, json: string, reply_to: string | undefined, dropped: number | undefined): string {
  const parts: string[] = [`{"type":"snapshot","seq":${string.format("%d", seq)}`];
  if (reply_to !== undefined) parts.push(`,"reply_to":${encode(reply_to)}`);
  if (dropped !== undefined && dropped > 0) parts.push(`,"dropped":${string.format("%d", dropped)}`);
  parts.push(',"snapshot":', json, "}");
  return table.concat(parts);
}

export type HelloAgent = AgentIdentity;

export function helloFrame(token: string, agent: HelloAgent): string {
  return encode({ type: "hello", protocol: PROTOCOL_VERSION, token, agent })!;
}

export function commandResultFrame(id: string, ok: boolean, err?: string): string {
  return encode({ type: "command_result", id, ok, error: err })!;
}
