/**
 * The nginx build the integration tests run against. Default: Debian's nginx with its
 * dynamically loaded lua-nginx-module. MEMDIAG_PLATFORM=openresty|tengine selects a real
 * OpenResty / Tengine built from ../shared/vendor (scripts/platform/build.sh, cached):
 * its binary, its statically linked lua module and its lua libraries.
 */
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { ROOT } from "../../scripts/config";

export type PlatformName = "debian" | "openresty" | "tengine";

export interface Platform {
  name: PlatformName;
  /** the nginx binary */
  nginx: string;
  /** main-context directives that load the lua module (empty where it is built in) */
  loadModules: string;
  /** the nginx source tree the binary was built from (layouts, dynamic modules) */
  src?: string;
  /** folder with resty.core, resty.websocket.client, cjson.so */
  lualib?: string;
  /** the shared LuaJIT library the binary links (OpenResty, Tengine) */
  luajitLib?: string;
  /** the nginx core version the agent reports (OpenResty 1.25.3.1 -> 1.25.3, Tengine 3.1.0 -> 1.24.0) */
  coreVersion: string;
}

/** The core version from `nginx -V`: "nginx/1.22.1", "openresty/1.25.3.1", Tengine's "nginx/1.24.0" line. */
export function coreVersionOf(nginx: string): string {
  const all = execFileSync("sh", ["-c", `"${nginx}" -V 2>&1`], { encoding: "utf8" });
  const m = /^nginx version: [^/]+\/(\d+\.\d+\.\d+)/m.exec(all);
  if (!m) throw new Error(`cannot read the nginx version from ${nginx} -V:\n${all}`);
  return m[1];
}

const DEBIAN_MODULES = "/usr/lib/nginx/modules";

function platformEnv(prefix: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of fs.readFileSync(path.join(prefix, "platform.env"), "utf8").split("\n")) {
    const m = line.match(/^([A-Z_]+)=(.*)$/);
    if (m) out[m[1]] = m[2].replace(/^'(.*)'$/, "$1");
  }
  return out;
}

function resolve(): Platform {
  const name = (process.env.MEMDIAG_PLATFORM ?? "debian") as PlatformName;
  if (name === "debian") {
    const nginx = process.env.MEMDIAG_NGINX ?? "/usr/sbin/nginx";
    return {
      name,
      nginx,
      loadModules: `load_module ${DEBIAN_MODULES}/ndk_http_module.so;\nload_module ${DEBIAN_MODULES}/ngx_http_lua_module.so;`,
      coreVersion: coreVersionOf(nginx),
    };
  }
  if (name !== "openresty" && name !== "tengine") throw new Error(`MEMDIAG_PLATFORM=${name}: expected debian, openresty or tengine`);
  let prefix: string;
  try {
    prefix = execFileSync("bash", [path.join(ROOT, "scripts/platform/build.sh"), name], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], timeout: 900000 }).trim().split("\n").pop()!;
  } catch (e: any) {
    throw new Error(`building platform ${name} failed:\n${e.stderr ?? e.message}`);
  }
  const env = platformEnv(prefix);
  const nginx = env.PLATFORM_NGINX;
  return { name, nginx, loadModules: "", src: env.PLATFORM_SRC, lualib: env.PLATFORM_LUALIB, luajitLib: path.join(env.PLATFORM_LUAJIT, "lib", "libluajit-5.1.so.2"), coreVersion: coreVersionOf(nginx) };
}

export const PLATFORM: Platform = resolve();

/** every folder from / down to `dir` can be entered by other users (o+x) */
function traversableByOthers(dir: string): boolean {
  for (let d = path.resolve(dir); ; d = path.dirname(d)) {
    if ((fs.statSync(d).mode & 0o001) === 0) return false;
    if (path.dirname(d) === d) return true;
  }
}

/**
 * The `user` directive for a master started as root: workers run as nobody, as in
 * production, unless the platform build sits where nobody cannot read it (the default
 * cache under root's home): then they stay root, or they could not load its lua libraries.
 */
export function workerUserDirective(): string {
  if (!(process.getuid && process.getuid() === 0)) return "";
  if (PLATFORM.lualib !== undefined && !traversableByOthers(PLATFORM.lualib)) return "user root root;";
  return "user nobody nogroup;";
}

/** true on the Debian build the whole suite targets; platform-matrix runs set MEMDIAG_PLATFORM */
export const onDebian = PLATFORM.name === "debian";
