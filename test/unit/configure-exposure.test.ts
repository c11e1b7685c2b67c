import { checkExposure, DEFAULT_CONFIG, exposureWarnings, MemdiagConfig } from "../../scripts/config";

/** `npm run configure`'s checks of how far /_memdiag and the control plane reach. */
function cfg(over: { listen?: string; token?: string; allow?: string[]; agentToken?: string }): MemdiagConfig {
  const c = structuredClone(DEFAULT_CONFIG);
  if (over.listen !== undefined) c.listen = over.listen;
  if (over.token !== undefined) c.token = over.token;
  if (over.allow !== undefined) c.agent.allow = over.allow;
  if (over.agentToken !== undefined) c.agent.token = over.agentToken;
  return c;
}

describe("configure: a /_memdiag beyond loopback without a token", () => {
  test("defaults (loopback, no allowlist): no problem, no warning", () => {
    expect(checkExposure(cfg({}))).toEqual([]);
    expect(exposureWarnings(cfg({}))).toEqual([]);
  });

  test("non-loopback listen or an allowlist without a token: a warning naming the refused actions", () => {
    for (const c of [cfg({ listen: "0.0.0.0:9145", allow: ["10.0.0.0/8"] }), cfg({ listen: "9145", allow: ["10.0.0.5"] }), cfg({ allow: ["10.0.0.5"] })]) {
      expect(checkExposure(c)).toEqual([]);
      const w = exposureWarnings(c);
      expect(w).toHaveLength(1);
      expect(w[0]).toMatch(/no "token" is set/);
      expect(w[0]).toMatch(/sampler=arm\|disarm\|clear, deep=1 and fresh=1/);
    }
  });

  test("with a token (top level or agent.token): no warning", () => {
    expect(exposureWarnings(cfg({ listen: "0.0.0.0:9145", allow: ["10.0.0.0/8"], token: "t0k" }))).toEqual([]);
    expect(exposureWarnings(cfg({ listen: "0.0.0.0:9145", allow: ["10.0.0.0/8"], agentToken: "t0k" }))).toEqual([]);
  });

  test("non-loopback listen without an allowlist is still refused", () => {
    expect(checkExposure(cfg({ listen: "0.0.0.0:9145", token: "t0k" }))).toHaveLength(1);
  });
});
