import { Args, registerParam } from "../http/endpoint";
import { arm, clear, disarm, got, lookup, status, top } from "./sampler";

/**
 * /_memdiag?sampler=arm|disarm|clear|status|top|got — the allocation sampler of
 * the worker that answers (its pid is in every answer; run one worker, or
 * repeat until the wanted pid answers — `pid=N` is checked, not forwarded).
 * Access control is /_memdiag's own (loopback + allowlist).
 *
 *   sampler=arm      [sampler_rate=BYTES] [sampler_depth=1..32] [sampler_aligned=0|1]
 *   sampler=top      [sampler_limit=N] [sampler_window=S] [sampler_min_age=S]
 *   sampler=disarm   restore the GOT; records stay readable (frozen) until clear or the next arm
 *   sampler=clear    drop the records and give their memory back (disarmed only)
 *   sampler=lookup   sampler_addr=0xA[,0xB...]: the live records at exactly these addresses (pool → creation path)
 *   sampler=got      every GOT slot of the hooked functions: current value, original, hooked?
 */
const DIGITS = "^%d+$";
const SECONDS = "^%d+%.?%d*$";

function num(args: Args, k: string): number | undefined {
  const v = args[k];
  return v === undefined ? undefined : tonumber(v as string);
}

function act(this: void, args: Args): LuaMultiReturn<[number, unknown]> {
  const pid = ngx.worker.pid();
  if (args.pid !== undefined && args.pid !== pid) {
    return $multi(409, `this request reached worker ${pid}, not ${args.pid}; the sampler acts on the answering worker (retry on a new connection)`);
  }
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
  } else if (what === "got") {
    [body, err] = got();
  } else {
    return $multi(400, `unknown sampler action '${what}'; valid: arm, disarm, clear, status, top, lookup, got`);
  }
  if (body === undefined) return $multi(503, err ?? "sampler unavailable");
  body.pid = pid;
  return $multi(200, body);
}

registerParam("sampler", "arm|disarm|clear|status|top|lookup|got = allocation sampler of the answering worker", "^%l+$", act);
registerParam("sampler_addr", "0xADDR[,0xADDR...] = sampler=lookup: the records at these addresses (pool first blocks)", "^[0-9a-fA-Fx,]+$");
registerParam("sampler_rate", "BYTES = mean sampling interval for sampler=arm (default 524288)", DIGITS);
registerParam("sampler_depth", "1..32 = frames per call path for sampler=arm", DIGITS);
registerParam("sampler_aligned", "0|1 = record every posix_memalign/memalign (pool blocks) in full (default 1)");
registerParam("sampler_limit", "N = call paths listed by sampler=top (default 20)", DIGITS);
registerParam("sampler_window", "S = sampler=top: only allocations made in the last S seconds", SECONDS);
registerParam("sampler_min_age", "S = sampler=top: only allocations at least S seconds old", SECONDS);
