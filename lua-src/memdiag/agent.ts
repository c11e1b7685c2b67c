import { config } from "./config";
import { collectSnapshot } from "./collect";
import { encode } from "./util/json";
import { publishSnapshot, generationFor } from "./publish";
import { identity } from "./identity";
import { scheduleDeepScans } from "./scan/deep";
import { Episode, firstLine } from "./util/episode";

/**
 * The per-worker loop: collect on an interval from a timer, publish to the
 * shared dict, hand the snapshot to listeners (the websocket push).
 */
export type SnapshotListener = (this: void, json: string, snap: { [k: string]: unknown }) => void;
const listeners: SnapshotListener[] = [];

let collecting = false;
let lastJson: string | undefined;
/** failures that recur at every interval: logged when they start, change and end (util/episode.ts) */
const collectEp = new Episode("memdiag: ", ["failed collection", "failed collections"]);
const publishEp = new Episode("memdiag: ", ["failed publication", "failed publications"]);
const listenerEp = new Episode("memdiag: ", ["failure", "failures"]);

export function onSnapshot(fn: SnapshotListener): void {
  listeners.push(fn);
}

export function lastSnapshotJson(): string | undefined {
  return lastJson;
}

/**
 * Collect now and publish. Returns the JSON, or undefined and an error. When a
 * collection is already running in this worker (a ?fresh=1 during the timer's
 * collection) it waits for that one instead of running two at once. `full`: every
 * layer is measured now (no reuse of the last region classification).
 */
export function collectAndPublish(canYield: boolean, full = false): LuaMultiReturn<[string | undefined, string | undefined]> {
  if (collecting) {
    if (!canYield) return $multi(lastJson, "collection in progress");
    for (let i = 0; i < 2000 && collecting; i++) ngx.sleep(0.005);
    return $multi(lastJson, undefined);
  }
  collecting = true;
  const [ok, snapOrErr] = xpcall(() => collectSnapshot(canYield, full), debug.traceback);
  collecting = false;
  if (!ok) {
    const msg = `collection failed: ${snapOrErr}`;
    collectEp.hit(ngx.ERR, firstLine(msg), msg);
    return $multi(undefined, `memdiag: ${msg}`);
  }
  collectEp.end(ngx.NOTICE, "collections work again");
  const snap = snapOrErr as { [k: string]: unknown };
  const json = encode(snap);
  if (!json) return $multi(undefined, "snapshot could not be encoded");
  lastJson = json;
  const perr = publishSnapshot(ngx.worker.pid(), json);
  if (perr) publishEp.hit(ngx.ERR, perr, perr);
  else publishEp.end(ngx.NOTICE, "snapshots are published again");
  let lfail = false;
  for (const fn of listeners) {
    const [lok, lerr] = pcall(fn, json, snap);
    if (!lok) {
      lfail = true;
      listenerEp.hit(ngx.ERR, firstLine(tostring(lerr)), `snapshot listener failed: ${lerr}`);
    }
  }
  if (!lfail) listenerEp.end(ngx.NOTICE, "snapshot listeners work again");
  return $multi(json, undefined);
}

function tickTimer(this: void, premature: boolean): void {
  // premature: the worker is shutting down (reload, quit); never hold it open.
  if (premature || ngx.worker.exiting()) return;
  collectAndPublish(true);
  if (ngx.worker.exiting()) return;
  const [ok, err] = ngx.timer.at(config.interval_s, tickTimer);
  if (!ok) ngx.log(ngx.ERR, "memdiag: cannot schedule next collection: ", err);
}

function firstTimer(this: void, premature: boolean): void {
  if (premature) return;
  const id = identity();
  id.generation = generationFor(id.cycle);
  scheduleDeepScans();
  tickTimer(false);
}

export function startLoop(): void {
  const [ok, err] = ngx.timer.at(0, firstTimer);
  if (!ok) ngx.log(ngx.ERR, "memdiag: cannot start agent timer: ", err);
}
