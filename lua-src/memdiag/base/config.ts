import { AGENT_DEFAULTS, AgentConfig } from "../contract/config";

/**
 * The worker's agent configuration. Users set it in memdiag.config.json ("agent");
 * `npm run configure` checks it against contract/config.ts (keys, types, ranges,
 * defaults) and bakes it into nginx-conf/memdiag.conf, which hands it to start()
 * as JSON.
 */
export type Config = AgentConfig;

/** One object for the worker's lifetime: modules keep a reference to it, so it is updated in place. */
export const config: Config = { ...AGENT_DEFAULTS };

/** Merge options over defaults; unknown or mistyped keys are reported, not silently dropped. */
export function applyConfig(opts: Partial<Config> & { [k: string]: unknown }): string[] {
  const c = config as unknown as { [k: string]: unknown };
  const unknown: string[] = [];
  for (const [k, v] of pairs(opts)) {
    if (c[k as string] === undefined) unknown.push(k as string);
    else if (type(v) !== type(c[k as string])) unknown.push(`${k} (expected ${type(c[k as string])})`);
    else c[k as string] = v;
  }
  return unknown;
}
