/**
 * One wrk run (one thread, keepalive, --latency) and its figures. `core` pins wrk with
 * taskset: on this 2-core machine the benchmarks put wrk on core 0 and the nginx worker on
 * core 1, so the two never fight over a core.
 */
import { execFile } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";

export interface WrkRun { rps: number; p50ms: number; p99ms: number; maxms: number; errors: number; requests: number }

/**
 * `pacedMs`: each connection waits a random 0..2*pacedMs ms (wrk's delay(), whole ms) before
 * each request, so the server runs below saturation, as gateways do in production: at
 * saturation any CPU the worker spends elsewhere queues the requests in flight.
 */
export interface WrkOptions { seconds: number; conns: number; core?: number; pacedMs?: number }

/** the wrk script for pacedMs (written once per value) */
function pacedScript(ms: number): string {
  const file = path.join(os.tmpdir(), `memdiag-wrk-paced-${ms}.lua`);
  if (!fs.existsSync(file)) fs.writeFileSync(file, `function delay() return math.random(0, ${2 * ms}) end\n`);
  return file;
}

function ms(v: string, unit: string): number {
  const x = Number(v);
  return unit === "us" ? x / 1000 : unit === "s" ? x * 1000 : x;
}

export function parseWrk(out: string): WrkRun {
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
  const p50 = /\s50%\s+([\d.]+)(us|ms|s)/.exec(out);
  const p99 = /\s99%\s+([\d.]+)(us|ms|s)/.exec(out);
  const max = /Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)/.exec(out);
  const reqs = /(\d+) requests in/.exec(out);
  const errs = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  if (!rps || !p50 || !p99 || !max || !reqs) throw new Error(`cannot parse wrk output:\n${out}`);
  const errors = (errs ? errs.slice(1).reduce((a, b) => a + Number(b), 0) : 0) + (non2xx ? Number(non2xx[1]) : 0);
  return { rps: Number(rps[1]), p50ms: ms(p50[1], p50[2]), p99ms: ms(p99[1], p99[2]), maxms: ms(max[1], max[2]), errors, requests: Number(reqs[1]) };
}

export function wrk(url: string, o: WrkOptions): Promise<WrkRun> {
  const args = ["-t1", `-c${o.conns}`, `-d${o.seconds}s`, "--latency", ...(o.pacedMs ? ["-s", pacedScript(o.pacedMs)] : []), url];
  const [cmd, argv] = o.core === undefined ? ["wrk", args] : ["taskset", ["-c", String(o.core), "wrk", ...args]];
  return new Promise((resolve, reject) => {
    execFile(cmd, argv, { encoding: "utf8" }, (err, out) => {
      if (err) return reject(err);
      try {
        resolve(parseWrk(out));
      } catch (e) {
        reject(e);
      }
    });
  });
}
