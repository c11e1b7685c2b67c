/**
 * `npm run demo` (scripts/demo.sh), non-interactive: a real nginx with the leak
 * fixture, the control plane, traffic; after MEMDIAG_DEMO_SECONDS the top suspect
 * must be the fixture's leaking pool group (exit 0), and everything the demo
 * started must be gone afterwards — also when it is interrupted.
 */
import { ensureFixture } from "../harness/fixtures";
import { leftovers, runDemo } from "../harness/demo";

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
