import * as ffi from "ffi";
import { cdef } from "../base/cdef";
import { config } from "../base/config";
import { addrOf } from "../safe/mem";

cdef(`extern void *ngx_cycle;`);
cdef(`extern uintptr_t ngx_pagesize;`);

export interface Identity {
  host: string;
  instance: string;
  master_pid: number;
  worker_start: number;
  generation: number;
  nginx_version: string;
  cycle: number;
}

let cached: Identity | undefined;

function readFirstLine(path: string): string | undefined {
  const [f] = io.open(path, "r");
  if (!f) return undefined;
  const line = f.read("*l") as string | undefined;
  f.close();
  return line;
}

export function nginxVersionString(): string {
  const v = ngx.config.nginx_version;
  return `${Math.floor(v / 1000000)}.${Math.floor(v / 1000) % 1000}.${v % 1000}`;
}

/** Address of the running cycle: changes on every reload, so it identifies a generation. */
export function cycleAddr(): number {
  return addrOf(ffi.C.ngx_cycle);
}

/** nginx's page size (ngx_pagesize: pool blocks and shm zones are sized in it); 4096 if unreadable. */
export function pagesize(): number {
  const [ok, v] = pcall(() => tonumber(ffi.C.ngx_pagesize));
  return ok && v !== undefined && v > 0 ? (v as number) : 4096;
}

/** Who this worker is. `generation` is set by init once the reload generation is known. */
export function identity(): Identity {
  if (cached) return cached;
  const host = readFirstLine("/proc/sys/kernel/hostname") ?? "localhost";
  const stat = readFirstLine("/proc/self/stat") ?? "";
  // field 4 (ppid) follows the parenthesised command name, which may contain spaces
  const [ppid] = string.match(stat, "%) %S+ (%d+)");
  const prefix = ngx.config.prefix();
  ngx.update_time();
  cached = {
    host,
    instance: config.instance !== "" ? config.instance : `${host}:${prefix}`,
    master_pid: tonumber(ppid) ?? 0,
    worker_start: ngx.now(),
    generation: 0,
    nginx_version: nginxVersionString(),
    cycle: cycleAddr(),
  };
  return cached;
}
