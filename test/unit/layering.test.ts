import * as fs from "fs";
import * as path from "path";

/**
 * The agent's folders are floors: a module imports only from its own floor or the
 * floors below it (docs/architecture.md). The deep-scan wing may use the
 * per-collection layers; the layers never use the deep scan.
 */
const SRC = path.join(__dirname, "..", "..", "lua-src", "memdiag");
const FLOORS: [string, number][] = [
  ["contract/", 0],
  ["base/", 1],
  ["safe/", 1],
  ["nginx/", 2],
  ["layers/", 3],
  ["deep/", 4],
];
function floorOf(rel: string): number {
  for (const [prefix, n] of FLOORS) if (rel.startsWith(prefix)) return n;
  return 5; // agent.ts, collect.ts, publish.ts, init.ts, http/, push/
}

function modules(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? modules(p) : e.name.endsWith(".ts") ? [p] : [];
  });
}

test("no agent module imports from a floor above its own", () => {
  const files = modules(SRC);
  expect(files.length).toBeGreaterThan(50);
  const upward: string[] = [];
  for (const f of files) {
    const rel = path.relative(SRC, f);
    const src = fs.readFileSync(f, "utf8");
    for (const m of src.matchAll(/(?:from|import)\s+"(\.[^"]+)"/g)) {
      const target = path.relative(SRC, path.resolve(path.dirname(f), m[1]));
      if (!fs.existsSync(path.join(SRC, target + ".ts"))) throw new Error(`${rel}: import ${m[1]} does not resolve`);
      if (floorOf(target) > floorOf(rel)) upward.push(`${rel} -> ${target}`);
    }
  }
  expect(upward).toEqual([]);
});

test("the contract imports nothing but itself, so both compilers can build it", () => {
  for (const f of modules(path.join(SRC, "contract"))) {
    for (const m of fs.readFileSync(f, "utf8").matchAll(/(?:from|import)\s+"([^"]+)"/g)) expect(m[1]).toMatch(/^\.\/[a-z-]+$/);
  }
});
