/**
 * Call path storage-independent logic (control-plane/src/callpaths.ts) and the
 * terminal console's call path lines (console/callpaths.ts).
 */
import Database from "better-sqlite3";
import { CallpathStore, diffCallpaths, diffFolded, foldedOf, pathKey, symbolizePaths } from "../../control-plane/src/callpaths";
import { Symbolizer } from "../../control-plane/src/elfsym";
import { callpathLines, callpathsView, pathLine } from "../../control-plane/src/console/callpaths";
import type { Callpaths } from "../../control-plane/src/protocol";

const frame = (module: string, offset: string, name: string | null = null) => ({ pc: "0x1", module, offset, build_id: null, path: null, name, label: name ?? `${module}+${offset}` });

function fetchOf(id: number, paths: [string, number, string[]][]): Callpaths {
  const result = {
    paths: paths.map(([fn, bytes, offs]) => ({ fn, est_bytes: bytes, est_count: bytes / 100, records: 1, record_bytes: bytes, frames: offs.map((o) => frame("m.so", o, o === "0x10" ? "leaf_fn+0x3" : null)) })),
  };
  return { id, worker: "w", time: id, pid: 1, paths_total: paths.length, est_bytes_total: paths.reduce((s, p) => s + p[1], 0), sampler: { armed: true }, paths: symbolizePaths(result, new Symbolizer([], [])) };
}

describe("call paths", () => {
  test("folded: outermost first, allocation function last, weight = bytes; names without ';' or ' '", () => {
    const f = fetchOf(1, [["malloc", 300, ["0x10", "0x20"]]]);
    expect(f.paths[0].folded).toBe("m.so+0x20;leaf_fn+0x3;malloc");
    expect(f.paths[0].key).toBe(pathKey("malloc", f.paths[0].frames));
    expect(foldedOf(f.paths)).toBe("m.so+0x20;leaf_fn+0x3;malloc 300\n");
    const odd = symbolizePaths({ paths: [{ fn: "malloc", est_bytes: 5, frames: [frame("a b.so", "0x1", "x;y z")] }] }, new Symbolizer([], []));
    expect(odd[0].folded).toBe("x_y_z;malloc");
  });

  test("diff: growth per path by key; new and vanished paths; difffolded lines", () => {
    const a = fetchOf(1, [["malloc", 300, ["0x10", "0x20"]], ["calloc", 50, ["0x30"]]]);
    const b = fetchOf(2, [["malloc", 900, ["0x10", "0x20"]], ["posix_memalign", 16, ["0x40"]]]);
    const d = diffCallpaths(a, b);
    expect(d.rows.map((r) => [r.fn, r.a_bytes, r.b_bytes, r.delta_bytes])).toEqual([
      ["malloc", 300, 900, 600],
      ["posix_memalign", 0, 16, 16],
      ["calloc", 50, 0, -50],
    ]);
    expect(diffFolded(d).trim().split("\n")).toEqual(["m.so+0x20;leaf_fn+0x3;malloc 300 900", "m.so+0x40;posix_memalign 0 16", "m.so+0x30;calloc 50 0"]);
  });

  test("store: ids per fetch, history newest first, only the last `keep` per worker", () => {
    const db = new Database(":memory:");
    const s = new CallpathStore(db, 2);
    const ids = [1, 2, 3].map((i) => s.add({ ...fetchOf(0, [["malloc", i, ["0x10"]]]), id: undefined } as never).id);
    expect(s.list("w").map((x) => x.id)).toEqual([ids[2], ids[1]]);
    expect(s.get(ids[0])).toBeUndefined();
    expect(s.get(ids[2])!.paths[0].est_bytes).toBe(3);
  });

  test("terminal lines: leaf → root, cut to the width", () => {
    expect(pathLine(["malloc", "a", "b"], 100)).toBe("malloc ← a ← b");
    const cut = pathLine(["malloc", "ngx_alloc+0xd", "ngx_http_leaky_upstream_update+0x88"], 20);
    expect(cut).toHaveLength(20);
    expect(cut.endsWith("…")).toBe(true);
    const v = callpathsView(fetchOf(7, [["malloc", 300, ["0x10", "0x20"]], ["calloc", 900, ["0x30"]]]));
    const lines = callpathLines(v, 50, 5).map((l) => l.map((s) => s.text).join(""));
    expect(lines).toHaveLength(3);
    expect(lines[1]).toMatch(/^\s+900 B\s+calloc ← m\.so\+0x30$/);
    expect(lines[2]).toMatch(/malloc ← leaf_fn\+0x3 ← m\.so\+0x20$/);
    for (const l of lines.slice(1)) expect(l.length).toBeLessThanOrEqual(50);
    expect(callpathLines(v, 40, 1)).toHaveLength(2);
  });
});
