/**
 * Runs compiled agent Lua (build/lua) in the `luajit` CLI for unit tests of pure
 * logic (no ngx). The chunk gets `J(v)` (encodes v with memdiag.base.json) and
 * `arr(t)`; whatever it returns is printed as JSON and parsed here.
 *
 *   const out = runLua(`local R = require("memdiag.push.queue").Ring ... return { n = q.count }`);
 */
import { spawnSync } from "child_process";
import * as path from "path";
import { ROOT } from "../../control-plane/src/config-file";

export const LUA_DIR = path.join(ROOT, "build", "lua");
export const LUAJIT = process.env.MEMDIAG_LUAJIT ?? "luajit";

const PRELUDE = `
package.path = ${JSON.stringify(LUA_DIR + "/?.lua;")} .. package.path
local __json = require("memdiag.base.json")
J = __json.encode
arr = __json.arr
NULL = __json.NULL
`;

export function runLua<T = any>(body: string): T {
  const chunk = `${PRELUDE}
local __f = function()
${body}
end
local __ok, __v = xpcall(__f, debug.traceback)
if not __ok then io.stderr:write(tostring(__v)) os.exit(3) end
io.write(J(__v == nil and NULL or __v) or "null")
`;
  const r = spawnSync(LUAJIT, ["-"], { input: chunk, encoding: "utf8", maxBuffer: 64 * 1024 * 1024, cwd: ROOT });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`luajit exited ${r.status}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

/** A Lua string literal for any text (long brackets with a level the text does not contain). */
export function luaStr(s: string): string {
  let eq = "";
  while ((s + "]").includes(`]${eq}]`)) eq += "=";
  // a newline right after the opening bracket is dropped by Lua: add one so the text stays exact
  return `[${eq}[\n${s}]${eq}]`;
}
