/**
 * `npm run demo` (scripts/demo.sh), non-interactive: a real nginx with the leak
 * fixture, the control plane, traffic; after MEMDIAG_DEMO_SECONDS the top suspect
 * must be the fixture's leaking pool group (exit 0), and everything the demo
 * started must be gone afterwards — also when it is interrupted.
 */
import { spawn, execFileSync } from "child_process";
import * as path from "path";
import { ROOT } from "../../control-plane/src/config-file";
import { ensureFixture } from "../harness/fixtures";

const DEMO_DIR = path.join(ROOT, ".tmp", "demo");


function leftovers(): string[] {
  try {
    return execFileSync("pgrep", ["-af", `${DEMO_DIR}|demo/helpers\\.js`], { encoding: "utf8" }).split("\n").filter(Boolean);
  } catch {
    return [];
  }
}

function runDemo(env: Record<string, string>, onOutput?: (all: string, child: ReturnType<typeof spawn>) => void): Promise<{ code: number | null; signal: string | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn("bash", [path.join(ROOT, "scripts", "demo.sh")], {
      cwd: ROOT,
      env: { ...process.env, MEMDIAG_DEMO_NO_SETUP: "1", MEMDIAG_DEMO_CP_PORT: "0", NO_COLOR: "1", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    const add = (d: Buffer): void => {
      out += d.toString();
      onOutput?.(out, child);
    };
    child.stdout.on("data", add);
    child.stderr.on("data", add);
    child.on("exit", (code, signal) => resolve({ code, signal, out }));
  });
}

describe("npm run demo (non-interactive)", () => {
  beforeAll(() => {
    ensureFixture();
  });

  test("after 90 s the top suspect is the leaking pool group; nothing is left running", async () => {
    // 90 s: the 60 s suspect window then starts after the agents' own warm-up (first deep scans)
    const r = await runDemo({ MEMDIAG_DEMO_SECONDS: "90" });
    if (r.code !== 0) throw new Error(`demo exited ${r.code}:\n${r.out.slice(-4000)}`);
    expect(r.out).toMatch(/web console: +http:\/\/127\.0\.0\.1:\d+\/\?window=1m/);
    // the console frame printed at the end names the suspect and its evidence
    expect(r.out).toMatch(/SUSPECTS \(last 60 s\)\n1\. unrooted pools \(create size 16384/);
    expect(r.out).toMatch(/demo: OK: the top suspect is the leaking pool group/);
    expect(r.out).toMatch(/256–512 KB chunks \+\d+/);
    expect(leftovers()).toEqual([]);
  }, 240000);

  test("interrupting it (SIGINT) stops nginx, the control plane and the traffic generator", async () => {
    let sent = false;
    const r = await runDemo({ MEMDIAG_DEMO_SECONDS: "600" }, (out, child) => {
      if (!sent && out.includes("running for 600 s")) {
        sent = true;
        child.kill("SIGINT");
      }
    });
    expect(sent).toBe(true);
    expect(r.code).toBe(130);
    expect(r.out).toMatch(/stopped nginx, the control plane and the traffic generator/);
    expect(leftovers()).toEqual([]);
  }, 240000);
});
