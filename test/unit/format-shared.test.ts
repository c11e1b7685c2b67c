import * as vm from "vm";
import * as F from "../../control-plane/src/format";

/** The web console runs format.ts's own functions (served as /format.js): they must run alone in a page and agree with the terminal's. */
test("browserScript defines the same formatting as the terminal console, standalone", () => {
  const page: Record<string, unknown> = {};
  vm.createContext(page);
  vm.runInContext(`${F.browserScript()}\nglobalThis.F = { fmtBytes, signedBytes, signedCount, fmtCount, fmtRatio, fmtDuration, fmtRange, classMax, regionLabel, REGION_CLASSES };`, page);
  const W = page.F as typeof F;
  const samples = [0, 1, -1, 1023, 1024, 1536, -2 * 1048576, 123456789, 5.5e12, NaN];
  for (const n of samples) {
    expect(W.fmtBytes(n)).toBe(F.fmtBytes(n));
    expect(W.signedBytes(n)).toBe(F.signedBytes(n));
    expect(W.signedCount(n)).toBe(F.signedCount(n));
    expect(W.fmtCount(n)).toBe(F.fmtCount(n));
    expect(W.fmtRatio(n / 1000)).toBe(F.fmtRatio(n / 1000));
  }
  expect(W.fmtRange(262144, F.classMax(262144))).toBe("256–512 KB");
  expect(W.fmtDuration(600)).toBe(F.fmtDuration(600));
  expect(JSON.stringify(W.REGION_CLASSES)).toBe(JSON.stringify(F.REGION_CLASSES));
  expect(W.regionLabel("other_anon")).toBe("other anon");
});

test("a zero change is written one way", () => {
  expect([F.signedBytes(0), F.signedCount(0), F.fmtRatio(0)]).toEqual(["0 B", "0", "0%"]);
  expect([F.signedBytes(1536), F.signedBytes(-1536), F.signedCount(-1234)]).toEqual(["+1.5 KB", "-1.5 KB", "-1,234"]);
});
