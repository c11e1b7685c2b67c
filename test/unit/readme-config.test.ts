import * as fs from "fs";
import * as path from "path";
import { AGENT_KEYS, CONTROL_PLANE_KEYS, FILE_KEYS, KeySpec } from "../../lua-src/memdiag/contract/config";

/** The README's configuration table lists every key of the contract, with the contract's range. */
test("README documents every configuration key with its range", () => {
  const readme = fs.readFileSync(path.join(__dirname, "..", "..", "README.md"), "utf8");
  const rows = new Map<string, string[]>();
  for (const line of readme.split("\n")) {
    const m = /^\| `([a-z_.]+)` \|(.*)\|$/.exec(line);
    if (m) rows.set(m[1], m[2].split("|").map((c) => c.trim()));
  }
  const check = (prefix: string, keys: Record<string, KeySpec>): void => {
    for (const [k, spec] of Object.entries(keys)) {
      const row = rows.get(prefix + k);
      expect([prefix + k, row !== undefined]).toEqual([prefix + k, true]);
      if (spec.min !== undefined) expect([prefix + k, row![1]]).toEqual([prefix + k, `${spec.min}–${spec.max}`]);
    }
  };
  check("", FILE_KEYS);
  check("control_plane.", CONTROL_PLANE_KEYS);
  check("agent.", AGENT_KEYS);
});
