/**
 * Helpers of scripts/demo.sh (`npm run demo`), one subcommand each:
 *   setup   --dir D [--cp-port 9146]   write a private nginx prefix (2 workers, memdiag include,
 *                                      leak fixture in leaky mode) and print shell assignments
 *   traffic --app-port N               normal requests + an "upstream update" every 2 s, until SIGTERM
 *   check   --url U [--window 60]      exit 0 when the top suspect is the fixture's leaking pool group
 */
import * as fs from "fs";
import * as http from "http";
import * as net from "net";
import * as path from "path";
import * as crypto from "crypto";
import { ROOT } from "../../control-plane/src/config-file";
import { renderConf } from "../render-conf";

const FIXTURE_SO = path.join(ROOT, "test/fixtures/leaky_upstream/build/ngx_http_leaky_upstream_module.so");
const MODULES = "/usr/lib/nginx/modules";

function flag(argv: string[], name: string, def?: string): string {
  const i = argv.indexOf(`--${name}`);
  if (i >= 0 && argv[i + 1] !== undefined) return argv[i + 1];
  if (def === undefined) throw new Error(`--${name} is required`);
  return def;
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once("error", () => resolve(false));
    s.listen(port, "127.0.0.1", () => s.close(() => resolve(true)));
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

async function setup(argv: string[]): Promise<void> {
  const dir = path.resolve(flag(argv, "dir"));
  const wantCp = Number(flag(argv, "cp-port", "9146"));
  if (!fs.existsSync(FIXTURE_SO)) throw new Error(`leak fixture not built: ${FIXTURE_SO} (bash scripts/build-fixture.sh)`);
  fs.rmSync(dir, { recursive: true, force: true });
  for (const d of ["conf", "logs", "tmp"]) fs.mkdirSync(path.join(dir, d), { recursive: true });
  // nginx workers run as nobody when we are root: they must be able to read the prefix
  for (let d = dir; d.startsWith(ROOT + path.sep); d = path.dirname(d)) fs.chmodSync(d, 0o755);
  const cpPort = wantCp > 0 && (await portFree(wantCp)) ? wantCp : await freePort();
  const appPort = await freePort();
  const memdiagPort = await freePort();
  const token = crypto.randomBytes(12).toString("hex");
  const memdiag = renderConf({
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
  fs.writeFileSync(path.join(dir, "conf", "memdiag.conf"), memdiag);
  const t = path.join(dir, "tmp");
  const user = process.getuid && process.getuid() === 0 ? "user nobody nogroup;" : "";
  fs.writeFileSync(path.join(dir, "conf", "nginx.conf"), `# memdiag demo: a gateway with a dynamic-upstream module that leaks pools (test/fixtures/leaky_upstream)
${user}
load_module ${MODULES}/ndk_http_module.so;
load_module ${MODULES}/ngx_http_lua_module.so;
load_module ${FIXTURE_SO};
worker_processes 2;
worker_shutdown_timeout 5s;
error_log ${path.join(dir, "logs", "error.log")} warn;
pid ${path.join(dir, "logs", "nginx.pid")};
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${t};
  proxy_temp_path ${t};
  fastcgi_temp_path ${t};
  uwsgi_temp_path ${t};
  scgi_temp_path ${t};
  leaky_upstream_mode leak;

  include memdiag.conf;

  server {
    listen 127.0.0.1:${appPort};
    keepalive_requests 100000;
    location = / { return 200 "hello from the demo gateway\\n"; }
    location /api/ { default_type application/json; return 200 '{"ok":true}'; }
    # the "control API" of the dynamic-upstream module: every call swaps in a new upstream
    location = /upstream/update { leaky_upstream_update; }
    location = /upstream/status { leaky_upstream_status; }
  }
}
`);
  process.stdout.write(`APP_PORT=${appPort}\nMEMDIAG_PORT=${memdiagPort}\nCP_PORT=${cpPort}\nTOKEN=${token}\n`);
}

function get(port: number, p: string, agent: http.Agent | false): Promise<number> {
  return new Promise((resolve) => {
    const req = http.get({ host: "127.0.0.1", port, path: p, agent, timeout: 5000 }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
    });
    req.on("timeout", () => req.destroy());
    req.on("error", () => resolve(0));
  });
}

async function traffic(argv: string[]): Promise<void> {
  const port = Number(flag(argv, "app-port"));
  const updateMs = Number(flag(argv, "update-ms", process.env.MEMDIAG_DEMO_UPDATE_MS ?? "2000"));
  const keep = new http.Agent({ keepAlive: true, maxSockets: 8 });
  let stop = false;
  const counts = { requests: 0, updates: 0, errors: 0 };
  process.on("SIGTERM", () => (stop = true));
  process.on("SIGINT", () => (stop = true));
  const paths = ["/", "/api/users", "/api/orders?id=7", "/", "/api/health"];
  // normal requests: 8 keepalive clients, ~40 requests/s in all
  const clients = Array.from({ length: 8 }, async (_, c) => {
    let i = c;
    while (!stop) {
      const st = await get(port, paths[i++ % paths.length], keep);
      counts.requests++;
      if (st !== 200) counts.errors++;
      await new Promise((r) => setTimeout(r, 200));
    }
  });
  // upstream updates from one control-API client on one keepalive connection: they land in one
  // worker, so the other worker is the steady baseline to compare with
  const ctl = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const updates = (async () => {
    while (!stop) {
      const st = await get(port, "/upstream/update", ctl);
      counts.updates++;
      if (st !== 200) counts.errors++;
      await new Promise((r) => setTimeout(r, updateMs));
    }
  })();
  await Promise.all([...clients, updates]);
  keep.destroy();
  ctl.destroy();
  process.stderr.write(`traffic: ${counts.requests} requests, ${counts.updates} upstream updates, ${counts.errors} errors\n`);
}

/** the fixture's pools are created with ngx_create_pool(16384) (test/fixtures/leaky_upstream, LEAKY_POOL_SIZE) */
const FIXTURE_POOL_SIZE = 16384;

async function check(argv: string[]): Promise<number> {
  const url = flag(argv, "url");
  const window = flag(argv, "window", "60");
  const r = await fetch(`${url}/api/suspects?window=${window}`);
  if (!r.ok) {
    process.stdout.write(`demo: GET /api/suspects answered ${r.status}\n`);
    return 1;
  }
  const s = (await r.json()) as { subject: string; owner: string; metric: string; evidence: string }[];
  const top = s[0];
  if (!top) {
    process.stdout.write("demo: FAIL: no suspect at all\n");
    return 1;
  }
  // "the leak" = the unrooted pool group the fixture creates (its creation size is part of the group)
  const isGroup = top.metric.startsWith("pool.unrooted.") && top.subject.includes(`create size ${FIXTURE_POOL_SIZE}`);
  if (!isGroup) {
    process.stdout.write(`demo: FAIL: the top suspect is ${top.subject} (${top.owner}, ${top.metric}), not the fixture's pool group\n  ${top.evidence}\n`);
    return 1;
  }
  process.stdout.write(`demo: OK: the top suspect is the leaking pool group (unrooted pools of ${FIXTURE_POOL_SIZE} B), held by ${top.owner}\n  ${top.evidence}\n`);
  if (!/leaky_upstream/.test(top.owner)) {
    process.stdout.write(`demo: note: the owner should name ngx_http_leaky_upstream_module (the pools hang off its .bss), got '${top.owner}'\n`);
  }
  return 0;
}

async function main(): Promise<number> {
  const [cmd, ...rest] = process.argv.slice(2);
  if (cmd === "setup") await setup(rest);
  else if (cmd === "traffic") await traffic(rest);
  else if (cmd === "check") return check(rest);
  else throw new Error(`usage: helpers.js setup|traffic|check ...`);
  return 0;
}

main().then((c) => process.exit(c), (e) => {
  process.stderr.write(`demo: ${(e as Error).message}\n`);
  process.exit(2);
});
