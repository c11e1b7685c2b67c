/**
 * `/_memdiag?pid=N` with an action that runs in a worker (fresh=1, deep=1): whichever worker
 * accepts the request, the action runs in worker N. The request is handed to N through the
 * shared dict; N polls for it (every 0.1 s), runs it, publishes its snapshot and posts the
 * outcome; the answering worker then serves N's snapshot as usual.
 */
import { config } from "../base/config";
import { publishedPids } from "../publish";
import { Mailbox, POLL_S, dict, isLiveWorker } from "./mailbox";

const box = new Mailbox("route");

/** What the target worker runs: status and a message (>= 400: error, 202: busy, try again). */
export type WorkerAction = (this: void, kind: string) => LuaMultiReturn<[number, string]>;
let runAction: WorkerAction | undefined;

/**
 * Runs `kind` (fresh or deep) in worker `pid` and waits up to `timeoutS` for it:
 * [status, message]; 200 means N published a snapshot taken by that action.
 */
export function runInWorker(pid: number, kind: string, timeoutS: number): LuaMultiReturn<[number, string]> {
  if (!dict()) return $multi(503, `lua_shared_dict ${config.dict} is missing: cannot reach worker ${pid}`);
  if (!isLiveWorker(pid)) return $multi(404, `no worker with pid ${pid} (workers publishing snapshots: ${publishedPids().join(", ")})`);
  const [key, err] = box.post(pid, { kind }, `worker ${pid} is busy with another request handed to it; retry`);
  if (key === undefined) return $multi(503, err!);
  const [status, msg] = box.await(pid, key, timeoutS);
  if (status === undefined) return $multi(504, `worker ${pid} did not finish ${kind} within ${timeoutS} s`);
  return $multi(status, msg!);
}

function execute(this: void, premature: boolean, id: string, kind: string): void {
  if (premature || runAction === undefined) return;
  const [ok, st, msg] = pcall(runAction, kind);
  if (ok) box.answer(id, st as unknown as number, msg as unknown as string);
  else box.answer(id, 500, `${kind} failed in worker ${ngx.worker.pid()}: ${tostring(st)}`);
}

function poll(this: void, premature: boolean): void {
  if (premature) return;
  const cmd = box.take();
  if (cmd === undefined || (cmd.kind !== "fresh" && cmd.kind !== "deep")) return;
  // its own light thread: a deep scan takes seconds, the poll timer keeps its pace
  const [ok, err] = ngx.timer.at(0, execute, cmd.id as string, cmd.kind as string);
  if (!ok) box.answer(cmd.id as string, 503, `worker ${ngx.worker.pid()} cannot start a timer: ${err}`);
}

/** Called once per worker (init_worker) with what a handed-over action runs. */
export function servePidRoutes(action: WorkerAction): void {
  runAction = action;
  const [ok, err] = ngx.timer.every(POLL_S, poll);
  if (!ok) ngx.log(ngx.ERR, "memdiag: pid route timer: ", err);
}
