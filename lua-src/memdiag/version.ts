export const AGENT_VERSION = "0.1.0";
export const SCHEMA_VERSION = 1;
