/**
 * `npm run demo -- --platform tengine`, non-interactive: a real Tengine with its dyups module,
 * the upstream re-posted every 2 s with keepalive; after MEMDIAG_DEMO_SECONDS the control
 * plane's top suspect must be the dyups pool group (create size 512), and nothing the demo
 * started may be left running.
 */
import { PLATFORM } from "../harness/platform";
import { leftovers, runDemo } from "../harness/demo";

(PLATFORM.name === "tengine" ? describe : describe.skip)("npm run demo -- --platform tengine (non-interactive)", () => {
  test("after 90 s the top suspect is the dyups pool group; nothing is left running", async () => {
    const r = await runDemo({ MEMDIAG_DEMO_SECONDS: "90" }, undefined, ["--platform", "tengine"]);
    if (r.code !== 0) throw new Error(`demo exited ${r.code}:\n${r.out.slice(-4000)}`);
    expect(r.out).toMatch(/SUSPECTS \(last 60 s\)\n1\. unrooted pools \(create size 512/);
    expect(r.out).toMatch(/demo: OK: the top suspect is the dyups pool group/);
    expect(r.out).toMatch(/256–512 KB chunks \+\d+/);
    expect(leftovers()).toEqual([]);
  }, 240000);
});
