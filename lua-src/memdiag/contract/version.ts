/**
 * Versions of the three things agents, control plane and consoles must agree on.
 * Compiled by typescript-to-lua for the agent and by tsc for the control plane,
 * the scripts and the tests: pure data, no runtime calls of either side.
 */

/** the agent's and the control plane's release (hello.agent.agent_version, /api/health) */
export const AGENT_VERSION = "0.1.0";
/** snapshot.schema_version (schema/snapshot.v1.schema.json) */
export const SCHEMA_VERSION = 1;
/** hello.protocol: the websocket frames below and in docs/protocol.md */
export const PROTOCOL_VERSION = 1;
