import * as fs from "fs";
import { luaStr, runLua } from "../harness/lua";

/** layers/system/status.ts parseStatus (compiled Lua) against an independent parse of the same text. */
const SAMPLE = `Name:\tnginx
Umask:\t0022
State:\tS (sleeping)
Pid:\t1866
VmPeak:\t   54336 kB
VmSize:\t   54300 kB
VmHWM:\t    9012 kB
VmRSS:\t    8640 kB
RssAnon:\t    2356 kB
RssFile:\t    6172 kB
RssShmem:\t     112 kB
VmData:\t    2268 kB
VmStk:\t     132 kB
VmSwap:\t       0 kB
Threads:\t1
`;

function truth(text: string): Record<string, number> {
  const f: Record<string, string> = { VmRSS: "rss_bytes", RssAnon: "anon_bytes", RssFile: "file_bytes", RssShmem: "shmem_bytes", VmData: "vm_data_bytes", VmSwap: "swap_bytes" };
  const out: Record<string, number> = { rss_bytes: 0, anon_bytes: 0, file_bytes: 0, shmem_bytes: 0, vm_data_bytes: 0, swap_bytes: 0 };
  for (const line of text.split("\n")) {
    const m = /^(\w+):\s+(\d+) kB$/.exec(line);
    if (m && f[m[1]]) out[f[m[1]]] = Number(m[2]) * 1024;
  }
  return out;
}

const parse = (text: string) => runLua(`return require("memdiag.layers.system.status").parseStatus(${luaStr(text)})`);

describe("parseStatus", () => {
  test("memory lines in bytes; VmRSS not confused with VmHWM/VmPeak; other lines ignored", () => {
    const r = parse(SAMPLE);
    expect(r).toEqual(truth(SAMPLE));
    expect(r.rss_bytes).toBe(8640 * 1024);
    expect(r.vm_data_bytes).toBe(2268 * 1024);
  });

  test("the test process's own /proc/self/status", () => {
    const text = fs.readFileSync("/proc/self/status", "utf8");
    expect(parse(text)).toEqual(truth(text));
  });

  test("missing lines (kernel threads, old kernels) stay 0", () => {
    expect(parse("Name:\tkthreadd\nThreads:\t1\n")).toEqual(truth(""));
  });
});
