import { jitLib } from "../../base/nojit";

// once a second, not hot enough to pay back its traces (base/nojit.ts jitLib)
jitLib?.off?.(true, true);

/** /proc/self/status memory lines, in bytes. */
export interface StatusMem {
  rss_bytes: number;
  anon_bytes: number;
  file_bytes: number;
  shmem_bytes: number;
  vm_data_bytes: number;
  swap_bytes: number;
}

const FIELDS: { [k: string]: keyof StatusMem } = {
  VmRSS: "rss_bytes",
  RssAnon: "anon_bytes",
  RssFile: "file_bytes",
  RssShmem: "shmem_bytes",
  VmData: "vm_data_bytes",
  VmSwap: "swap_bytes",
};

export function parseStatus(text: string): StatusMem {
  const out: StatusMem = { rss_bytes: 0, anon_bytes: 0, file_bytes: 0, shmem_bytes: 0, vm_data_bytes: 0, swap_bytes: 0 };
  for (const [k, v] of string.gmatch(text, "(%w+):%s+(%d+) kB")) {
    const f = FIELDS[k];
    if (f !== undefined) out[f] = tonumber(v)! * 1024;
  }
  return out;
}

export function readStatus(): StatusMem | undefined {
  const [f] = io.open("/proc/self/status", "r");
  if (!f) return undefined;
  const text = f.read("*a") as string;
  f.close();
  return parseStatus(text);
}
