import { config } from "../config";
import { decide, peerAddress } from "./access";
import { collectAndPublish } from "../agent";
import { publishedPids, snapshotOf } from "../publish";
import { encode, pretty } from "../util/json";
import { deepScanStatus, runDeepScan, waitDeepScan } from "../scan/deep";
import { runInWorker, servePidRoutes } from "./pid-route";

/**
 * content_by_lua handler of /_memdiag: every worker's latest snapshot.
 * Parameters are checked strictly; a typo should not silently return the default view.
 */
const PARAMS: { [k: string]: string } = {
  pretty: "1 = indented JSON",
  pid: "N = only the worker with this pid; with fresh or deep, that worker runs it",
  fresh: "1 = the answering worker (or pid=N) collects now",
  deep: "1 = the answering worker (or pid=N) runs a deep scan (heap walk, pool discovery, owners) and answers when done",
};

/** longest a ?deep=1 request waits for its scan */
const DEEP_WAIT_S = 600;

/**
 * An action parameter answers the request itself (status, JSON body) instead of the snapshot view.
 * Returning status >= 400 with a string body sends {"error": body}; below 400 a string body is JSON text sent as is.
 */
export type ParamAction = (this: void, args: Args) => LuaMultiReturn<[number, unknown]>;
/** true when the action, with these args, only reads (see changes()) */
export type ReadsOnly = (this: void, args: Args) => boolean;
const PATTERNS: { [k: string]: string } = {};
const ACTIONS: { [k: string]: ParamAction } = {};
const READS_ONLY: { [k: string]: ReadsOnly } = {};

/** parameters handled here that change the answering worker (collect now, scan the heap) */
const CHANGING: { [k: string]: boolean } = { deep: true, fresh: true };

/**
 * Add a query parameter. Values must be 0/1 unless `pattern` (a Lua pattern) is given; `action` makes it answer the request.
 * An action changes the worker (token needed from non-loopback clients) unless `readsOnly` says it only reads for these args.
 */
export function registerParam(name: string, help: string, pattern?: string, action?: ParamAction, readsOnly?: ReadsOnly): void {
  PARAMS[name] = help;
  if (pattern !== undefined) PATTERNS[name] = pattern;
  if (action !== undefined) ACTIONS[name] = action;
  if (readsOnly !== undefined) READS_ONLY[name] = readsOnly;
}

/**
 * What the request would change in a worker ("sampler=arm", "deep=1"), or undefined when it only reads.
 * Actions count as changing unless registered as reading: one added later is guarded until it says otherwise.
 */
export function changes(args: Args): string | undefined {
  for (const [name, on] of pairs(CHANGING)) if (on && args[name] === true) return `${name}=1`;
  for (const [name] of pairs(ACTIONS)) {
    const v = args[name];
    if (v === undefined) continue;
    const reads = READS_ONLY[name];
    if (reads === undefined || !reads(args)) return `${name}=${tostring(v === true ? 1 : v)}`;
  }
  return undefined;
}

const reserved = ngx as unknown as NgxReservedFields;

function fail(status: number, message: string): never {
  ngx.status = status;
  ngx.header["Content-Type"] = "application/json";
  ngx.say(encode({ error: message }) ?? '{"error":"?"}');
  return ngx.exit(status);
}

function usage(): string {
  const names: string[] = [];
  for (const [k] of pairs(PARAMS)) names.push(tostring(k));
  table.sort(names);
  return names.map((k) => `${k} (${PARAMS[k]})`).join(", ");
}

export interface Args {
  pretty: boolean;
  pid?: number;
  fresh: boolean;
  [k: string]: unknown;
}

/** Validate query parameters; returns the parsed args or an error message. */
export function parseArgs(raw: { [k: string]: unknown }): LuaMultiReturn<[Args | undefined, string | undefined]> {
  const out: Args = { pretty: false, fresh: false };
  for (const [k, v] of pairs(raw)) {
    const key = tostring(k);
    if (PARAMS[key] === undefined) return $multi(undefined, `unknown parameter '${key}'; valid: ${usage()}`);
    if (type(v) !== "string") return $multi(undefined, `parameter '${key}' needs one value`);
    const s = v as string;
    if (key === "pid") {
      const [digits] = string.match(s, "^%d+$");
      if (digits === undefined) return $multi(undefined, `pid must be a positive integer, got '${s}'`);
      out.pid = tonumber(s);
    } else if (PATTERNS[key] !== undefined) {
      const [m] = string.match(s, PATTERNS[key]);
      if (m === undefined) return $multi(undefined, `bad value '${s}' for ${key} (${PARAMS[key]})`);
      out[key] = s;
    } else {
      if (s !== "0" && s !== "1") return $multi(undefined, `${key} must be 0 or 1, got '${s}'`);
      out[key] = s === "1";
    }
  }
  return $multi(out, undefined);
}

/**
 * fresh=1 or deep=1 (a deep scan, then a fresh collection) in this worker: [status, message];
 * 202 when a deep scan is already running here. Also what a request handed over with pid=N runs.
 */
function runHere(this: void, kind: string): LuaMultiReturn<[number, string]> {
  if (kind === "deep") {
    const [started, why] = runDeepScan();
    if (!started) return $multi(202, `${why}; wait for it to finish and ask again`);
    if (!waitDeepScan(DEEP_WAIT_S)) return $multi(503, "deep scan did not finish in time");
  }
  const [, cerr] = collectAndPublish(true, true);
  if (cerr) return $multi(503, cerr);
  return $multi(200, "ok");
}

if (ngx.get_phase() === "init_worker") servePidRoutes(runHere);

export function handle(this: void): void {
  if (ngx.req.get_method() !== "GET" && ngx.req.get_method() !== "HEAD") fail(405, "only GET");
  // decided once, here, on the connection's own address: requests this worker hands to
  // another (sampler pid=N, sampler_all) go through the shared dict only after it
  const peer = peerAddress((name) => reserved.var[name]);
  let [refused, why] = decide(peer, config.allow, config.token, undefined, undefined);
  if (refused !== 0) return fail(refused, why!);

  // which worker accepted the request (pid=N hands worker actions over to N)
  ngx.header["X-Memdiag-Answered-By"] = ngx.worker.pid();
  const [raw] = ngx.req.get_uri_args(32);
  const [args, err] = parseArgs(raw);
  if (!args) return fail(400, err!);

  const change = changes(args);
  if (change !== undefined) {
    [refused, why] = decide(peer, config.allow, config.token, change, reserved.var.http_authorization);
    if (refused === 401) ngx.header["WWW-Authenticate"] = 'Bearer realm="memdiag"';
    if (refused !== 0) return fail(refused, why!);
  }

  for (const [name, action] of pairs(ACTIONS)) {
    if (args[name] === undefined) continue;
    const [status, body] = action(args);
    if (status >= 400 && type(body) === "string") return fail(status, body as string);
    ngx.status = status;
    ngx.header["Content-Type"] = "application/json";
    ngx.header["Cache-Control"] = "no-store";
    const json = type(body) === "string" ? (body as string) : encode(body) ?? '{"error":"response could not be encoded"}';
    ngx.say(args.pretty ? pretty(json) : json);
    return;
  }

  const kind = args.deep ? "deep" : args.fresh ? "fresh" : undefined;
  if (kind !== undefined) {
    const me = ngx.worker.pid();
    const remote = args.pid !== undefined && args.pid !== me;
    const [st, msg] = remote ? runInWorker(args.pid!, kind, DEEP_WAIT_S + 10) : runHere(kind);
    if (st === 202) {
      // one scan at a time per worker: report the running job, the client retries later
      ngx.status = 202;
      ngx.header["Content-Type"] = "application/json";
      ngx.header["Retry-After"] = "1";
      ngx.say(encode({ pid: remote ? args.pid : me, message: msg, scan: remote ? undefined : deepScanStatus() }) ?? "{}");
      return ngx.exit(202);
    }
    if (st >= 400) return fail(st, msg);
  }

  const pids = args.pid !== undefined ? [args.pid] : publishedPids();
  const parts: string[] = [];
  for (const pid of pids) {
    const s = snapshotOf(pid);
    if (s !== undefined) parts.push(s);
  }
  if (args.pid !== undefined && parts.length === 0) return fail(404, `no snapshot for worker pid ${args.pid}`);

  ngx.header["Content-Type"] = "application/json";
  ngx.header["Cache-Control"] = "no-store";
  const body = `{"workers":[${parts.join(",")}]}`;
  if (args.pretty) {
    ngx.say(pretty(body));
  } else {
    ngx.say(body);
  }
}
