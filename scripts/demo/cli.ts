/** Command-line, port and nginx.conf helpers shared by the demo's helper scripts (scripts/demo.sh). */
import * as net from "net";
import * as path from "path";
import { ROOT } from "../../control-plane/src/config-file";
import { renderConf } from "../render-conf";

/** The main-context lines of a demo prefix after `worker_processes`: logs and pid in `dir`, then `events`. */
export function prefixMain(dir: string, workerConnections: number): string {
  return `worker_shutdown_timeout 5s;
error_log ${path.join(dir, "logs", "error.log")} warn;
pid ${path.join(dir, "logs", "nginx.pid")};
events { worker_connections ${workerConnections}; }`;
}

/** The demo's memdiag include: collections every 2 s, pushed to the control plane on cpPort with the token. */
export function demoMemdiagConf(memdiagPort: number, cpPort: number, token: string): string {
  return renderConf({
    listen: `127.0.0.1:${memdiagPort}`,
    dictSize: "16m",
    agent: {
      layouts_dir: path.join(ROOT, "layouts"),
      interval_s: 2,
      // a deep scan (heap walk, pool groups, owners) every 3 s: the demo wants an answer within a minute
      deep_interval_s: Number(process.env.MEMDIAG_DEMO_DEEP_S ?? "3"),
      control_plane_url: `ws://127.0.0.1:${cpPort}/ingest`,
      token,
    },
  });
}

/** The http-context lines that keep every temporary file of the demo in `dir`/tmp. */
export function prefixHttp(dir: string): string {
  const t = path.join(dir, "tmp");
  return `access_log off;
  client_body_temp_path ${t};
  proxy_temp_path ${t};
  fastcgi_temp_path ${t};
  uwsgi_temp_path ${t};
  scgi_temp_path ${t};`;
}

export function flag(argv: string[], name: string, def?: string): string {
  const i = argv.indexOf(`--${name}`);
  if (i >= 0 && argv[i + 1] !== undefined) return argv[i + 1];
  if (def === undefined) throw new Error(`--${name} is required`);
  return def;
}

export function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once("error", () => resolve(false));
    s.listen(port, "127.0.0.1", () => s.close(() => resolve(true)));
  });
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

export interface Suspect {
  subject: string;
  owner: string;
  metric: string;
  evidence: string;
}

/**
 * `check --url U [--window 60]`: the control plane's top suspect is an unrooted pool group
 * of creation size `poolSize`; prints OK or FAIL with the evidence and returns the exit code.
 */
export async function checkTopSuspect(argv: string[], poolSize: number, what: string): Promise<{ code: number; top?: Suspect }> {
  const url = flag(argv, "url");
  const window = flag(argv, "window", "60");
  const r = await fetch(`${url}/api/suspects?window=${window}`);
  if (!r.ok) {
    process.stdout.write(`demo: GET /api/suspects answered ${r.status}\n`);
    return { code: 1 };
  }
  const all = (await r.json()) as Suspect[];
  const top = all[0];
  if (!top) {
    process.stdout.write("demo: FAIL: no suspect at all\n");
    return { code: 1 };
  }
  // the group's creation size is part of its subject
  if (!(top.metric.startsWith("pool.unrooted.") && top.subject.includes(`create size ${poolSize}`))) {
    process.stdout.write(`demo: FAIL: the top suspect is ${top.subject} (${top.owner}, ${top.metric}), not ${what}\n  ${top.evidence}\n`);
    for (const [i, x] of all.slice(1, 5).entries()) process.stdout.write(`  ${i + 2}. ${x.subject} (${x.owner}, ${x.metric}): ${x.evidence}\n`);
    return { code: 1, top };
  }
  process.stdout.write(`demo: OK: the top suspect is ${what} (unrooted pools of ${poolSize} B), held by ${top.owner}\n  ${top.evidence}\n`);
  return { code: 0, top };
}

/** Runs `setup`, `traffic` or `check` from the command line and exits with its code. */
export function runSubcommands(name: string, cmds: { [k: string]: (argv: string[]) => Promise<number | void> }): void {
  const [cmd, ...rest] = process.argv.slice(2);
  const f = cmds[cmd];
  const run = f ? f(rest) : Promise.reject(new Error(`usage: ${name} ${Object.keys(cmds).join("|")} ...`));
  run.then((c) => process.exit(typeof c === "number" ? c : 0), (e) => {
    process.stderr.write(`demo: ${(e as Error).message}\n`);
    process.exit(2);
  });
}
