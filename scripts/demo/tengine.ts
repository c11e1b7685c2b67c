/**
 * Helpers of `npm run demo -- --platform tengine` (scripts/demo.sh): the reference case study
 * on a real Tengine 3.1.0 with its dynamic-upstream module (scripts/platform/build.sh tengine).
 * Same subcommands as helpers.ts:
 *   setup   --dir D --nginx BIN [--cp-port 9146]   a private prefix: the gateway proxies /svc/ to a
 *                                      dyups upstream (consistent hash, 150 servers, keepalive),
 *                                      a backend server, the dyups interface; prints shell assignments
 *   traffic --app-port N --dyups-port N --backend-port N
 *                                      normal requests + the upstream re-posted every 2 s, until SIGTERM
 *   check   --url U [--window 60]      exit 0 when the top suspect is the dyups pool group
 */
import * as fs from "fs";
import * as path from "path";
import * as crypto from "crypto";
import { ROOT } from "../../control-plane/src/config-file";
import { checkTopSuspect, demoMemdiagConf, flag, freePort, portFree, prefixHttp, prefixMain, runSubcommands } from "./cli";
import { DYUPS_POOL_SIZE, dyupsConf, dyupsUpdate } from "./dyups";

/** every folder from / down to `dir` can be entered by other users */
function traversableByOthers(dir: string): boolean {
  for (let d = path.resolve(dir); ; d = path.dirname(d)) {
    if ((fs.statSync(d).mode & 0o001) === 0) return false;
    if (path.dirname(d) === d) return true;
  }
}

async function setup(argv: string[]): Promise<void> {
  const dir = path.resolve(flag(argv, "dir"));
  const nginx = flag(argv, "nginx");
  const wantCp = Number(flag(argv, "cp-port", "9146"));
  fs.rmSync(dir, { recursive: true, force: true });
  for (const d of ["conf", "logs", "tmp"]) fs.mkdirSync(path.join(dir, d), { recursive: true });
  for (let d = dir; d.startsWith(ROOT + path.sep); d = path.dirname(d)) fs.chmodSync(d, 0o755);
  const cpPort = wantCp > 0 && (await portFree(wantCp)) ? wantCp : await freePort();
  const [appPort, memdiagPort, backendPort, dyupsPort] = [await freePort(), await freePort(), await freePort(), await freePort()];
  const token = crypto.randomBytes(12).toString("hex");
  fs.writeFileSync(path.join(dir, "conf", "memdiag.conf"), demoMemdiagConf(memdiagPort, cpPort, token));
  // workers run as nobody when we are root, unless the build sits where nobody cannot read it
  const root = process.getuid && process.getuid() === 0;
  const user = !root ? "" : traversableByOthers(path.dirname(nginx)) ? "user nobody nogroup;" : "user root root;";
  const c = dyupsConf(backendPort, dyupsPort);
  fs.writeFileSync(path.join(dir, "conf", "nginx.conf"), `# memdiag demo on Tengine: a gateway whose upstream is re-posted through the dyups interface
${user}
worker_processes 1;
${prefixMain(dir, 4096)}
http {
  ${prefixHttp(dir)}

  include memdiag.conf;
${c.http}
  server {
    listen 127.0.0.1:${appPort};
    keepalive_requests 100000;
    location = / { return 200 "hello from the demo gateway\\n"; }
${c.appLocations}
  }
}
`);
  process.stdout.write(`APP_PORT=${appPort}\nMEMDIAG_PORT=${memdiagPort}\nCP_PORT=${cpPort}\nTOKEN=${token}\nDYUPS_PORT=${dyupsPort}\nBACKEND_PORT=${backendPort}\n`);
}

async function traffic(argv: string[]): Promise<void> {
  const appPort = Number(flag(argv, "app-port"));
  const dyupsPort = Number(flag(argv, "dyups-port"));
  const backendPort = Number(flag(argv, "backend-port"));
  const updateMs = Number(flag(argv, "update-ms", process.env.MEMDIAG_DEMO_UPDATE_MS ?? "2000"));
  let stop = false;
  let updates = 0;
  let errors = 0;
  process.on("SIGTERM", () => (stop = true));
  process.on("SIGINT", () => (stop = true));
  // service discovery re-posts the upstream (an endpoint changed); requests flow through each version
  while (!stop) {
    try {
      await dyupsUpdate(dyupsPort, appPort, backendPort, 3);
      updates++;
    } catch (e) {
      errors++;
      process.stderr.write(`traffic: ${(e as Error).message}\n`);
    }
    await new Promise((r) => setTimeout(r, updateMs));
  }
  process.stderr.write(`traffic: ${updates} upstream updates, ${errors} errors\n`);
}

async function check(argv: string[]): Promise<number> {
  return (await checkTopSuspect(argv, DYUPS_POOL_SIZE, "the dyups pool group")).code;
}

runSubcommands("tengine.js", { setup, traffic, check });
