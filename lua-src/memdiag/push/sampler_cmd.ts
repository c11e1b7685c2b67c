import { arm, disarm, status, top } from "../deep/sampler/sampler";
import { encode } from "../base/json";

/**
 * Sampler commands over the push websocket (docs/protocol.md, "Sampler
 * commands"): the control plane sends {type:"command", id, command, args?} and
 * the worker answers with one command_result carrying `result` (the same JSON
 * as /_memdiag?sampler=status|arm|disarm|top). Runs in the command timer of
 * push/client.ts (top() yields between ~1 ms symbolisation slices there).
 */

type Obj = { [k: string]: unknown };

const DEFAULT_LIMIT = 200;

function argNum(args: unknown, k: string): number | undefined {
  if (type(args) !== "table") return undefined;
  const v = (args as Obj)[k];
  return type(v) === "number" ? (v as number) : undefined;
}

/** Runs one sampler command: [result, error]. */
export function runSamplerCommand(command: string, args: unknown): LuaMultiReturn<[Obj | undefined, string | undefined]> {
  if (command === "sampler_status") return $multi(status(), undefined);
  if (command === "sampler_arm") {
    const rate = argNum(args, "rate");
    const depth = argNum(args, "depth");
    if (rate !== undefined && (rate < 1 || rate > 1099511627776)) return $multi(undefined, "rate must be 1..2^40 bytes");
    if (depth !== undefined && (depth < 1 || depth > 32)) return $multi(undefined, "depth must be 1..32");
    const aligned = type(args) === "table" ? (args as Obj)["aligned"] : undefined;
    return arm({ rate, depth, aligned: aligned !== false });
  }
  if (command === "sampler_disarm") return disarm();
  // sampler_top
  const limit = argNum(args, "limit") ?? DEFAULT_LIMIT;
  if (limit < 1 || limit > 1000) return $multi(undefined, "limit must be 1..1000");
  const [body, err] = top({ limit, window_s: argNum(args, "window_s"), min_age_s: argNum(args, "min_age_s") });
  if (body === undefined) return $multi(undefined, err ?? "no records");
  body.sampler = status();
  body.pid = ngx.worker.pid();
  return $multi(body, undefined);
}

/**
 * The command_result frame with its result, or undefined when it would not fit
 * `maxBytes` (the caller answers ok:false then). A top answer that is too large
 * is cut to fewer paths (the largest stay) and says so (`truncated_paths`).
 */
export function samplerResultFrame(id: string, result: Obj, maxBytes: number): string | undefined {
  let frame = encode({ type: "command_result", id, ok: true, result });
  const paths = result["paths"] as unknown[] | undefined;
  while (frame !== undefined && frame.length > maxBytes && paths !== undefined && paths.length > 1) {
    const keep = Math.max(1, Math.floor(paths.length * Math.min(0.9, maxBytes / frame.length)));
    const cut = paths.length - keep;
    for (let i = 0; i < cut; i++) paths.pop();
    result["truncated_paths"] = ((result["truncated_paths"] as number | undefined) ?? 0) + cut;
    frame = encode({ type: "command_result", id, ok: true, result });
  }
  if (frame === undefined || frame.length > maxBytes) return undefined;
  return frame;
}
