/**
 * Helpers of scripts/demo.sh (`npm run demo`), one subcommand each:
 *   setup   --dir D [--cp-port 9146]   write a private nginx prefix (2 workers, memdiag include,
 *                                      leak fixture in leaky mode) and print shell assignments
 *   traffic --app-port N               normal requests + an "upstream update" every 2 s, until SIGTERM
 *   check   --url U [--window 60]      exit 0 when the top suspect is the fixture's leaking pool group
 */
import * as fs from "fs";
import * as http from "http";
import * as path from "path";
import * as crypto from "crypto";
import { ROOT } from "../../control-plane/src/config-file";
import { checkTopSuspect, demoMemdiagConf, flag, freePort, portFree, prefixHttp, prefixMain, runSubcommands } from "./cli";

const FIXTURE_SO = path.join(ROOT, "test/fixtures/leaky_upstream/build/ngx_http_leaky_upstream_module.so");
const MODULES = "/usr/lib/nginx/modules";

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
  const memdiag = demoMemdiagConf(memdiagPort, cpPort, token);
  fs.writeFileSync(path.join(dir, "conf", "memdiag.conf"), memdiag);
  const user = process.getuid && process.getuid() === 0 ? "user nobody nogroup;" : "";
  fs.writeFileSync(path.join(dir, "conf", "nginx.conf"), `# memdiag demo: a gateway with a dynamic-upstream module that leaks pools (test/fixtures/leaky_upstream)
${user}
load_module ${MODULES}/ndk_http_module.so;
load_module ${MODULES}/ngx_http_lua_module.so;
load_module ${FIXTURE_SO};
worker_processes 2;
${prefixMain(dir, 1024)}
http {
  ${prefixHttp(dir)}
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
  // "the leak" = the unrooted pool group the fixture creates
  const { code, top } = await checkTopSuspect(argv, FIXTURE_POOL_SIZE, "the leaking pool group");
  if (code === 0 && top && !/leaky_upstream/.test(top.owner)) {
    process.stdout.write(`demo: note: the owner should name ngx_http_leaky_upstream_module (the pools hang off its .bss), got '${top.owner}'\n`);
  }
  return code;
}

runSubcommands("helpers.js", { setup, traffic, check });
