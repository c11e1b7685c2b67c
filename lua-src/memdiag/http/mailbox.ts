import * as ffi from "ffi";
import { config } from "../base/config";
import { publishedPids } from "../publish";
import { decode, encode } from "../base/json";
import { cdef } from "../base/cdef";

/**
 * A request handed from the worker that accepted an HTTP request to another worker of the
 * same nginx, through the shared dict: at most one pending request per target worker and
 * mailbox, which a timer in the target polls for (every POLL_S), runs, and answers with
 * "<status> <text>". Workers exchange requests only here, and no client writes the dict.
 */

cdef(`int kill(int pid, int sig);`);
const C = ffi.C;
const ESRCH = 3;

/** how often a worker looks for a request addressed to it */
export const POLL_S = 0.1;
/** how long an unclaimed request or an uncollected answer stays in the dict */
export const KEEP_S = 30;

export function dict(): ngx.SharedDict | undefined {
  return ngx.shared[config.dict];
}

/** A published pid whose process is gone (its snapshot outlives it until the TTL): kill(pid, 0) says ESRCH. */
export function isGone(pid: number): boolean {
  return C.kill(pid, 0) !== 0 && ffi.errno() === ESRCH;
}

/** pid is a worker of this nginx that is alive (it published a snapshot and kill(pid, 0) finds it) */
export function isLiveWorker(pid: number): boolean {
  let published = false;
  for (const p of publishedPids()) if (p === pid) published = true;
  return published && !isGone(pid);
}

export class Mailbox {
  private seq = 0;
  private readonly cmd: string;
  private readonly res: string;

  /** `name` keeps this mailbox's requests apart from other mailboxes' */
  constructor(name: string) {
    this.cmd = `${name}:cmd:`;
    this.res = `${name}:res:`;
  }

  /**
   * Hands `payload` (a JSON object; `id` is added) to worker `pid`: the key to wait on, or
   * undefined and an error (`busy` when that worker already has a request of this mailbox).
   */
  post(pid: number, payload: { [k: string]: unknown }, busy: string): LuaMultiReturn<[string | undefined, string | undefined]> {
    const d = dict();
    if (!d) return $multi(undefined, `lua_shared_dict ${config.dict} is missing: cannot reach worker ${pid}`);
    this.seq++;
    const id = `${ngx.worker.pid()}:${this.seq}:${Math.floor(ngx.now() * 1000)}`;
    payload.id = id;
    const [ok, err] = d.add(this.cmd + pid, encode(payload) ?? "{}", KEEP_S);
    if (!ok) return $multi(undefined, err === "exists" ? busy : `shared dict: ${err}`);
    return $multi(this.res + id, undefined);
  }

  /** Waits up to timeoutS for the answer: [status, text], or undefined when none came (the request is withdrawn). */
  await(pid: number, key: string, timeoutS: number): LuaMultiReturn<[number, string] | [undefined, undefined]> {
    const d = dict()!;
    const deadline = ngx.now() + timeoutS;
    while (true) {
      const [v] = d.get(key);
      if (v !== undefined) {
        d.delete(key);
        const [status, text] = string.match(v as string, "^(%d+) (.*)$");
        return $multi(tonumber(status) ?? 500, text ?? "");
      }
      if (ngx.now() >= deadline) break;
      ngx.sleep(0.02);
      ngx.update_time();
    }
    d.delete(this.cmd + pid);
    return $multi(undefined, undefined);
  }

  /** The request addressed to this worker, taken out of the dict (with its `id`), if there is one. */
  take(): { [k: string]: unknown } | undefined {
    const d = dict();
    if (!d) return undefined;
    const key = this.cmd + ngx.worker.pid();
    const [raw] = d.get(key);
    if (raw === undefined) return undefined;
    d.delete(key);
    const [req] = decode(raw as string);
    if (req === undefined || type(req.id) !== "string") return undefined;
    return req;
  }

  /** Posts the answer "<status> <text>" to request `id`. */
  answer(id: string, status: number, text: string): LuaMultiReturn<[boolean, string | undefined]> {
    const d = dict();
    if (!d) return $multi(false, "no shared dict");
    const [ok, err] = d.set(this.res + id, `${status} ${text}`, KEEP_S);
    return $multi(ok, err);
  }
}
