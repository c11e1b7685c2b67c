/**
 * Chooses the struct layout of the running nginx build and validates it against
 * the live cycle before anything walks with it. The verdict is cached per worker:
 * the full validation runs once, each collection re-checks the cheap invariants.
 * No matching or no valid layout → the pool layers report why, the error log gets
 * exactly one line per worker, and the other layers carry on. It never guesses.
 */
import { Ctx } from "../base/context";
import { Layout } from "./types";
import { config } from "../base/config";
import { decode } from "../base/json";
import { nginxVersionString } from "./identity";
import { checkComplete, quickCheck, Roots, validateLive } from "./validate";
import { jitLib } from "../base/nojit";

// once a second, not hot enough to pay back its traces (base/nojit.ts jitLib)
jitLib?.off?.(true, true);
export { Layout } from "./types";

let loaded: Layout | undefined;
let roots: Roots | undefined;
/** final verdict for this worker once a layout was refused */
let refused: string | undefined;

/** First 12 hex of md5 of the configure arguments exactly as this binary reports them (NGX_CONFIGURE). */
export function configureHash(): string {
  return string.sub(ngx.md5(ngx.config.nginx_configure()), 1, 12);
}

export function expectedLayoutId(): string {
  return `${nginxVersionString()}-${configureHash()}`;
}

/** The layouts folder: configured, else <project>/layouts next to build/lua. */
function layoutsDir(): string {
  if (config.layouts_dir !== "") return config.layouts_dir;
  // this file is <root>/build/lua/memdiag/nginx/select.lua
  const src = debug.getinfo(1, "S")?.source ?? "";
  const [root] = string.match(src, "^@(.*)/build/lua/memdiag/nginx/select%.lua$");
  if (root !== undefined) return `${root}/layouts`;
  return "layouts";
}

function readFile(path: string): LuaMultiReturn<[string | undefined, string | undefined]> {
  const [f, err] = io.open(path, "r");
  if (!f) return $multi(undefined, err);
  const text = f.read("*a") as string | undefined;
  f.close();
  return $multi(text, undefined);
}

function load(): LuaMultiReturn<[Layout | undefined, string | undefined]> {
  const version = nginxVersionString();
  const want = expectedLayoutId();
  const forced = config.layout_file !== "";
  let path: string;
  if (forced) {
    path = string.sub(config.layout_file, 1, 1) === "/" ? config.layout_file : `${layoutsDir()}/${config.layout_file}`;
  } else {
    path = `${layoutsDir()}/${want}.json`;
  }
  const [text, rerr] = readFile(path);
  if (text === undefined) {
    if (forced) return $multi(undefined, `cannot read layout_file ${path}: ${rerr}`);
    return $multi(
      undefined,
      `no struct layout for this nginx build (nginx ${version}, configure hash ${configureHash()}): ${path} not found; run \`npm run layouts\` on a machine with this build's sources`,
    );
  }
  const [L, derr] = decode(text);
  if (L === undefined) return $multi(undefined, `layout ${path} is not valid JSON: ${derr}`);
  const incomplete = checkComplete(L);
  if (incomplete) return $multi(undefined, `layout ${path} refused: ${incomplete}`);
  const layout = L as Layout;
  if (layout.nginx_version !== version) {
    return $multi(undefined, `layout ${layout.id} is for nginx ${layout.nginx_version}, this is nginx ${version}`);
  }
  if (!forced && layout.configure_hash !== configureHash()) {
    return $multi(undefined, `layout ${path} has configure hash ${layout.configure_hash}, this build has ${configureHash()}`);
  }
  return $multi(layout, undefined);
}

function refuse(reason: string): LuaMultiReturn<[Layout | undefined, string | undefined]> {
  refused = reason;
  loaded = undefined;
  roots = undefined;
  ngx.log(ngx.ERR, "memdiag: nginx pool and connection layers unavailable in this worker: ", reason);
  return $multi(undefined, reason);
}

/**
 * The validated layout for this worker, or undefined and the reason. Call once per
 * collection with fresh maps; it re-checks the cheap invariants every time.
 */
export function currentLayout(ctx: Ctx): LuaMultiReturn<[Layout | undefined, string | undefined]> {
  if (refused !== undefined) return $multi(undefined, refused);
  if (loaded === undefined) {
    const [L, err] = load();
    if (L === undefined) return refuse(err ?? "no layout");
    loaded = L;
  }
  const L = loaded;
  if (roots === undefined) {
    const [r, err] = validateLive(ctx, L);
    if (r === undefined) return refuse(`layout ${L.id} refused: ${err}`);
    roots = r;
    ngx.log(ngx.INFO, `memdiag: struct layout ${L.id} validated against the running cycle`);
    return $multi(L, undefined);
  }
  const q = quickCheck(ctx, L, roots);
  if (q !== undefined) return refuse(`layout ${L.id} no longer holds: ${q}`);
  return $multi(L, undefined);
}

/** The cycle roots found by the last successful validation. */
export function layoutRoots(): Roots | undefined {
  return roots;
}
