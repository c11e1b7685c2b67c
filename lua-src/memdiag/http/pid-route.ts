/**
 * `/_memdiag?pid=N` with an action that runs in a worker (fresh=1, deep=1): whichever worker
 * accepts the request, the action runs in worker N. The request is handed to N through the
 * shared dict; N polls for it (every 0.1 s), runs it, publishes its snapshot and posts the
 * outcome; the answering worker then serves N's snapshot as usual.
 */
import * as ffi from "ffi";
import { config } from "../config";
import { publishedPids } from "../publish";
import { decode, encode } from "../util/json";
import { cdef } from "../util/cdef";

cdef(`int kill(int pid, int sig);`);
const C = ffi.C;
const ESRCH = 3;

const CMD = "route:cmd:";
const RES = "route:res:";
const POLL_S = 0.1;
/** how long an unclaimed command or an uncollected answer stays in the dict */
const KEEP_S = 30;

/** What the target worker runs: status and a message (>= 400: error, 202: busy, try again). */
export type WorkerAction = (this: void, kind: string) => LuaMultiReturn<[number, string]>;
let runAction: WorkerAction | undefined;
let seq = 0;

function dict(): ngx.SharedDict | undefined {
  return ngx.shared[config.dict];
}

/** pid is a worker of this nginx that is alive (it published a snapshot and kill(pid, 0) finds it) */
export function isLiveWorker(pid: number): boolean {
  let published = false;
  for (const p of publishedPids()) if (p === pid) published = true;
  if (!published) return false;
  return !(C.kill(pid, 0) !== 0 && ffi.errno() === ESRCH);
}

/**
 * Runs `kind` (fresh or deep) in worker `pid` and waits up to `timeoutS` for it:
 * [status, message]; 200 means N published a snapshot taken by that action.
 */
export function runInWorker(pid: number, kind: string, timeoutS: number): LuaMultiReturn<[number, string]> {
  const d = dict();
  if (!d) return $multi(503, `lua_shared_dict ${config.dict} is missing: cannot reach worker ${pid}`);
  if (!isLiveWorker(pid)) return $multi(404, `no worker with pid ${pid} (workers publishing snapshots: ${publishedPids().join(", ")})`);
  seq++;
  const id = `${ngx.worker.pid()}:${seq}:${Math.floor(ngx.now() * 1000)}`;
  const [ok, err] = d.add(CMD + pid, encode({ id, kind }) ?? "{}", KEEP_S);
  if (!ok) return $multi(503, err === "exists" ? `worker ${pid} is busy with another request handed to it; retry` : `shared dict: ${err}`);
  const deadline = ngx.now() + timeoutS;
  while (true) {
    const [v] = d.get(RES + id);
    if (v !== undefined) {
      d.delete(RES + id);
      const [st, msg] = string.match(v as string, "^(%d+) (.*)$");
      return $multi(tonumber(st) ?? 500, msg ?? "");
    }
    if (ngx.now() >= deadline) break;
    ngx.sleep(0.02);
    ngx.update_time();
  }
  d.delete(CMD + pid);
  return $multi(504, `worker ${pid} did not finish ${kind} within ${timeoutS} s`);
}

function execute(this: void, premature: boolean, id: string, kind: string): void {
  if (premature || runAction === undefined) return;
  const [ok, st, msg] = pcall(runAction, kind);
  const text = ok ? `${st} ${msg}` : `500 ${kind} failed in worker ${ngx.worker.pid()}: ${tostring(st)}`;
  dict()?.set(RES + id, text, KEEP_S);
}

function poll(this: void, premature: boolean): void {
  if (premature) return;
  const d = dict();
  if (!d) return;
  const key = CMD + ngx.worker.pid();
  const [raw] = d.get(key);
  if (raw === undefined) return;
  d.delete(key);
  const [cmd] = decode(raw as string);
  if (cmd === undefined || type(cmd.id) !== "string" || (cmd.kind !== "fresh" && cmd.kind !== "deep")) return;
  // its own light thread: a deep scan takes seconds, the poll timer keeps its pace
  const [ok, err] = ngx.timer.at(0, execute, cmd.id as string, cmd.kind as string);
  if (!ok) d.set(RES + (cmd.id as string), `503 worker ${ngx.worker.pid()} cannot start a timer: ${err}`, KEEP_S);
}

/** Called once per worker (init_worker) with what a handed-over action runs. */
export function servePidRoutes(action: WorkerAction): void {
  runAction = action;
  const [ok, err] = ngx.timer.every(POLL_S, poll);
  if (!ok) ngx.log(ngx.ERR, "memdiag: pid route timer: ", err);
}
