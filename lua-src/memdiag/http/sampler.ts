import { Args, registerParam } from "./endpoint";
import { publishedPids } from "../publish";
import { decode, encode } from "../base/json";
import { Mailbox, POLL_S, isGone, isLiveWorker } from "./mailbox";
import { lastSnapshotJson } from "../agent";
import { arm, clear, disarm, got, lookup, poolCreationSites, status, top } from "../deep/sampler/sampler";


/**
 * /_memdiag?sampler=arm|disarm|clear|status|top|lookup|got — the allocation
 * sampler of one worker: the one that answers, or `pid=N` (the request is
 * handed to worker N through the shared dict; it answers within ~0.1 s), or
 * every worker with `sampler_all=1` (answer: {"workers":[...]}).
 * Access control is /_memdiag's own: loopback + allowlist; arm, disarm, clear and
 * got change the worker (arm and got load the native library, arm rewrites the
 * GOT) and need the token from other clients, the other actions only read.
 *
 *   sampler=arm      [sampler_rate=BYTES] [sampler_depth=1..32] [sampler_aligned=0|1]
 *   sampler=top      [sampler_limit=N] [sampler_window=S] [sampler_min_age=S]
 *   sampler=folded   FlameGraph input of the live paths (weights = estimated bytes): jq -r .folded | flamegraph.pl
 *   sampler=disarm   restore the GOT; records stay readable (frozen) until clear or the next arm
 *   sampler=clear    drop the records and give their memory back (disarmed only)
 *   sampler=lookup   sampler_addr=0xA[,0xB...]: the live records at exactly these addresses (pool → creation path)
 *   sampler=pools    unrooted pool groups of the last deep scan (?deep=1) with their creation call path (created_at)
 *   sampler=got      every GOT slot of the hooked functions: current value, original, hooked?
 */
const DIGITS = "^%d+$";
const SECONDS = "^%d+%.?%d*$";

function num(args: Args, k: string): number | undefined {
  const v = args[k];
  return v === undefined ? undefined : tonumber(v as string);
}

/** Runs a sampler action in this worker. */
function local(args: Args): LuaMultiReturn<[number, unknown]> {
  const pid = ngx.worker.pid();
  const what = args.sampler as string;
  let body: { [k: string]: unknown } | undefined;
  let err: string | undefined;
  if (what === "status") {
    body = status();
  } else if (what === "arm") {
    const rate = num(args, "sampler_rate");
    const depth = num(args, "sampler_depth");
    if (rate !== undefined && (rate < 1 || rate > 1099511627776)) return $multi(400, "sampler_rate must be 1..2^40 bytes");
    if (depth !== undefined && (depth < 1 || depth > 32)) return $multi(400, "sampler_depth must be 1..32");
    [body, err] = arm({ rate, depth, aligned: args.sampler_aligned === undefined ? true : args.sampler_aligned === true });
    if (err === "arm failed: already armed") return $multi(409, err);
  } else if (what === "disarm") {
    [body, err] = disarm();
    if (err === "not armed") return $multi(409, err);
  } else if (what === "clear") {
    [body, err] = clear();
    if (err !== undefined) return $multi(409, err);
  } else if (what === "top") {
    const limit = num(args, "sampler_limit");
    if (limit !== undefined && (limit < 1 || limit > 1000)) return $multi(400, "sampler_limit must be 1..1000");
    [body, err] = top({ limit, window_s: num(args, "sampler_window"), min_age_s: num(args, "sampler_min_age") });
    if (body !== undefined) body.sampler = status();
    else if (err !== undefined) return $multi(409, err);
  } else if (what === "lookup") {
    const list = args.sampler_addr as string | undefined;
    if (list === undefined) return $multi(400, "sampler=lookup needs sampler_addr=0xADDR[,0xADDR...]");
    const addrs: number[] = [];
    for (const [h] of string.gmatch(list, "[^,]+")) {
      const a = tonumber(h);
      if (a === undefined || addrs.length >= 4096) return $multi(400, `bad address '${h}' (at most 4096)`);
      addrs.push(a);
    }
    [body, err] = lookup(addrs);
    if (err !== undefined) return $multi(409, err);
  } else if (what === "folded") {
    // FlameGraph input: one "outer;...;inner;fn weight" line per path, weight = estimated live bytes
    const [t, terr] = top({ limit: 1000, window_s: num(args, "sampler_window"), min_age_s: num(args, "sampler_min_age") });
    if (t === undefined) return $multi(409, terr ?? "no records");
    const lines: string[] = [];
    for (const p of t.paths as { folded: string; est_bytes: number }[]) lines.push(`${p.folded} ${p.est_bytes}`);
    body = { paths: lines.length, est_bytes_total: t.est_bytes_total, folded: table.concat(lines, "\n") + (lines.length > 0 ? "\n" : "") };
  } else if (what === "pools") {
    [body, err] = poolCreationSites(lastSnapshotJson());
    if (err !== undefined) return $multi(409, err);
  } else if (what === "got") {
    [body, err] = got();
  } else {
    return $multi(400, `unknown sampler action '${what}'; valid: arm, disarm, clear, status, top, folded, lookup, pools, got`);
  }
  if (body === undefined) return $multi(503, err ?? "sampler unavailable");
  body.pid = pid;
  return $multi(200, body);
}

// ---- other workers: commands and answers through the shared dict ----

const box = new Mailbox("sampler");

/** Posts args to worker `pid`; returns the answer key, or an error. */
function post(pid: number, args: Args): LuaMultiReturn<[string | undefined, string | undefined]> {
  const plain: { [k: string]: unknown } = {};
  for (const [k, v] of pairs(args)) if (k !== "pid" && k !== "sampler_all" && k !== "pretty") plain[k as string] = v;
  return box.post(pid, { args: plain }, `worker ${pid} is busy with another sampler command; retry`);
}

/** Waits for an answer posted by another worker: [status, raw JSON body]. */
function await_(pid: number, key: string, timeoutS: number): LuaMultiReturn<[number, string]> {
  const [status, raw] = box.await(pid, key, timeoutS);
  if (status === undefined) return $multi(504, encode({ error: `worker ${pid} did not answer within ${timeoutS} s (not running, or busy)`, pid }) ?? "{}");
  return $multi(status, raw === "" ? "{}" : raw!);
}

/** The other worker's side: a timer polls for a command addressed to this worker. */
function poll(this: void, premature: boolean): void {
  if (premature) return;
  const cmd = box.take();
  if (cmd === undefined || type(cmd.args) !== "table") return;
  const [ok, res] = pcall(() => {
    const [st, b] = local(cmd.args as Args);
    return { st, b };
  });
  let status: number;
  let body: string;
  if (!ok) {
    status = 500;
    body = encode({ error: `sampler command failed: ${tostring(res)}`, pid: ngx.worker.pid() })!;
  } else {
    const r = res as { st: number; b: unknown };
    status = r.st;
    if (type(r.b) === "string" && r.st >= 400) body = encode({ error: r.b, pid: ngx.worker.pid() })!;
    else body = encode(r.b) ?? "{}";
  }
  const text = `${status} ${body}`;
  const [sok, serr] = box.answer(cmd.id as string, status, body);
  if (!sok) box.answer(cmd.id as string, 507, encode({ error: `answer of ${text.length} bytes does not fit the shared dict: ${serr}` })!);
}

function act(this: void, args: Args): LuaMultiReturn<[number, unknown]> {
  const me = ngx.worker.pid();
  ngx.header["X-Memdiag-Answered-By"] = me;
  if (args.sampler_all === true) {
    const waits: [number, string][] = [];
    const parts: string[] = [];
    for (const pid of publishedPids()) {
      if (pid === me || isGone(pid)) continue;
      const [key, err] = post(pid, args);
      if (key !== undefined) waits.push([pid, key]);
      else parts.push(encode({ pid, error: err }) ?? "{}");
    }
    const [status, body] = local(args);
    parts.push(status >= 400 && type(body) === "string" ? encode({ pid: me, error: body })! : encode(body) ?? "{}");
    // one deadline for all: the answers come in parallel
    const deadline = ngx.now() + 5;
    for (const [pid, key] of waits) {
      const [, raw] = await_(pid, key, Math.max(0, deadline - ngx.now()));
      parts.push(raw);
    }
    return $multi(200, `{"workers":[${parts.join(",")}]}`);
  }
  if (args.pid !== undefined && args.pid !== me) {
    if (!isLiveWorker(args.pid)) return $multi(404, `no worker with pid ${args.pid} (workers publishing snapshots: ${publishedPids().join(", ")})`);
    const [key, err] = post(args.pid, args);
    if (key === undefined) return $multi(503, err!);
    const [status, raw] = await_(args.pid, key, 10);
    if (status >= 400) {
      const [e] = decode(raw);
      return $multi(status, e && type(e.error) === "string" ? (e.error as string) : raw);
    }
    return $multi(status, raw);
  }
  return local(args);
}

/** the actions that only read; anything else (arm, disarm, clear, got: it loads the library; an unknown one) counts as changing the worker */
const READS: { [what: string]: boolean } = { status: true, top: true, folded: true, lookup: true, pools: true };

/**
 * Adds the sampler's parameters to /_memdiag and, from init_worker, starts the timer that
 * answers requests other workers hand to this one (pid=N, sampler_all=1). Called by start().
 */
export function startSamplerEndpoint(): void {
  if (ngx.get_phase() === "init_worker") {
    const [ok, err] = ngx.timer.every(POLL_S, poll);
    if (!ok) ngx.log(ngx.ERR, "memdiag: sampler command timer: ", err);
  }

  registerParam("sampler", "arm|disarm|clear|status|top|folded|lookup|pools|got = allocation sampler of the answering worker", "^%l+$", act, (args) => READS[args.sampler as string] === true);
  registerParam("sampler_all", "1 = the sampler action in every worker (answer: {\"workers\":[...]})");
  registerParam("sampler_addr", "0xADDR[,0xADDR...] = sampler=lookup: the records at these addresses (pool first blocks)", "^[0-9a-fA-Fx,]+$");
  registerParam("sampler_rate", "BYTES = mean sampling interval for sampler=arm (default 524288)", DIGITS);
  registerParam("sampler_depth", "1..32 = frames per call path for sampler=arm", DIGITS);
  registerParam("sampler_aligned", "0|1 = record every posix_memalign/memalign (pool blocks) in full (default 1)");
  registerParam("sampler_limit", "N = call paths listed by sampler=top (default 20)", DIGITS);
  registerParam("sampler_window", "S = sampler=top: only allocations made in the last S seconds", SECONDS);
  registerParam("sampler_min_age", "S = sampler=top: only allocations at least S seconds old", SECONDS);
}
