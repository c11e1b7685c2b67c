/**
 * memdiag.config.json: the one place users configure memdiag (agent, /_memdiag
 * server, control plane). Every key is optional; keys, types, ranges and defaults
 * are the contract's (lua-src/memdiag/contract/config.ts). A key that is unknown,
 * of the wrong type or out of range is refused here, with the valid keys listed,
 * before nginx ever sees it. MEMDIAG_CONFIG=/path/to/file points at another file.
 */
import * as fs from "fs";
import * as path from "path";
import {
  AGENT_KEYS, AgentConfig, CONTROL_PLANE_DEFAULTS, CONTROL_PLANE_KEYS, ControlPlaneConfig, FILE_KEYS, KeySpec, keyProblem,
} from "../../lua-src/memdiag/contract/config";

/** The agent's options as memdiag.config.json gives them: any subset of the agent's keys. */
export type AgentOptions = Partial<AgentConfig>;

export interface MemdiagConfig {
  listen: string;
  dict_size: string;
  token: string;
  control_plane: ControlPlaneConfig;
  agent: AgentOptions;
}

/** The project root: the nearest folder with package.json above this file (works from dist/ and from sources). */
export const ROOT = ((): string => {
  let d = __dirname;
  while (!fs.existsSync(path.join(d, "package.json")) && path.dirname(d) !== d) d = path.dirname(d);
  return d;
})();

export const DEFAULT_CONFIG: MemdiagConfig = {
  listen: FILE_KEYS.listen.default as string,
  dict_size: FILE_KEYS.dict_size.default as string,
  token: FILE_KEYS.token.default as string,
  control_plane: { ...CONTROL_PLANE_DEFAULTS },
  agent: {},
};

export function configPath(): string {
  return process.env.MEMDIAG_CONFIG ?? path.join(ROOT, "memdiag.config.json");
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Checks `over` against `keys` and returns the defaults with it applied. */
function section<T>(defaults: T, keys: Record<string, KeySpec>, over: unknown, where: string): T {
  if (over === undefined) return defaults;
  if (!isObject(over)) throw new Error(`${where}: expected an object`);
  const out: Record<string, unknown> = { ...(defaults as Record<string, unknown>) };
  for (const [k, v] of Object.entries(over)) {
    const spec = keys[k];
    if (spec === undefined) throw new Error(`${where}: unknown key '${k}' (valid: ${Object.keys(keys).join(", ")})`);
    const problem = keyProblem(spec, v);
    if (problem) throw new Error(`${where}.${k}: ${problem} (${spec.doc})`);
    out[k] = v;
  }
  return out as T;
}

/** The file's settings over the defaults; throws with a message naming the key on anything unknown or invalid. */
export function checkConfig(raw: unknown, where = "config"): MemdiagConfig {
  if (!isObject(raw)) throw new Error(`${where}: expected an object`);
  const { control_plane, agent, ...top } = raw;
  const topKeys: Record<string, KeySpec> = { ...FILE_KEYS };
  for (const k of Object.keys(top)) {
    if (topKeys[k] === undefined) {
      throw new Error(`${where}: unknown key '${k}' (valid: ${[...Object.keys(FILE_KEYS), "control_plane", "agent"].join(", ")})`);
    }
  }
  const base = section({ listen: DEFAULT_CONFIG.listen, dict_size: DEFAULT_CONFIG.dict_size, token: DEFAULT_CONFIG.token }, topKeys, top, where);
  return {
    ...base,
    control_plane: section({ ...CONTROL_PLANE_DEFAULTS }, CONTROL_PLANE_KEYS as Record<string, KeySpec>, control_plane, `${where}.control_plane`),
    agent: section<AgentOptions>({}, AGENT_KEYS as Record<string, KeySpec>, agent, `${where}.agent`),
  };
}

export function loadConfig(file = configPath()): MemdiagConfig {
  if (!fs.existsSync(file)) return structuredClone(DEFAULT_CONFIG);
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (e) {
    throw new Error(`${file}: not valid JSON: ${(e as Error).message}`);
  }
  try {
    return checkConfig(raw);
  } catch (e) {
    throw new Error(`${file}: ${(e as Error).message}`);
  }
}

/** "host:port" (also "[::1]:9146") → its parts; undefined when it is not host:port */
export function splitListen(listen: string): { host: string; port: number } | undefined {
  const m = /^\[?([^\]]*)\]?:(\d+)$/.exec(listen);
  return m ? { host: m[1], port: Number(m[2]) } : undefined;
}

function isLoopbackListen(listen: string): boolean {
  return /^(127\.\d+\.\d+\.\d+|localhost|\[::1\]):\d+$/.test(listen) || listen.startsWith("unix:");
}

/** The agent options as the worker receives them: control-plane URL and token filled in. */
export function agentOptions(cfg: MemdiagConfig): AgentOptions {
  const a: AgentOptions = { ...cfg.agent };
  if (a.token === undefined && cfg.token) a.token = cfg.token;
  if (a.control_plane_url === undefined && cfg.control_plane.push) {
    a.control_plane_url = `ws://${cfg.control_plane.listen}/ingest`;
  }
  if (a.layouts_dir === undefined) a.layouts_dir = path.join(ROOT, "layouts");
  return a;
}

/** Refuse a configuration that would expose memory data beyond loopback without a token. */
export function checkExposure(cfg: MemdiagConfig): string[] {
  const problems: string[] = [];
  if (!isLoopbackListen(cfg.listen) && !(cfg.agent.allow && cfg.agent.allow.length > 0)) {
    problems.push(`listen ${cfg.listen} is not loopback: also set agent.allow to the clients that may read /_memdiag`);
  }
  if (!isLoopbackListen(cfg.control_plane.listen) && !cfg.token) {
    problems.push(`control_plane.listen ${cfg.control_plane.listen} is not loopback: set "token"`);
  }
  return problems;
}

/** Allowed but worth saying: a /_memdiag reachable beyond loopback without a token. */
export function exposureWarnings(cfg: MemdiagConfig): string[] {
  const warnings: string[] = [];
  const remote = !isLoopbackListen(cfg.listen) || (cfg.agent.allow ?? []).length > 0;
  if (remote && !agentOptions(cfg).token) {
    warnings.push(
      `/_memdiag is open beyond loopback (listen ${cfg.listen}, allow ${JSON.stringify(cfg.agent.allow ?? [])}) and no "token" is set: ` +
        `allowlisted clients can read snapshots, but sampler=arm|disarm|clear, deep=1 and fresh=1 are refused to them until "token" is set`,
    );
  }
  return warnings;
}
