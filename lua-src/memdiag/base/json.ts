import * as cjson from "cjson.safe";
import { noJit } from "./nojit";

/**
 * JSON for snapshots. Encoding is our own: Debian's lua-cjson 2.1.0 cannot
 * encode an empty array as [] (no array_mt) and caps number precision at 14
 * digits; the schema needs both right. Decoding uses cjson.safe (no global
 * settings touched, so the host application's cjson is unaffected).
 */
const ARRAY_MT = { __jsonarray: true };

/** Encodes as JSON null (a Lua nil would drop the key). */
export const NULL = setmetatable({}, { __tostring: () => "null" });

/** Mark a Lua table as a JSON array so an empty one encodes as []. */
export function arr<T>(t: T[]): T[] {
  return setmetatable(t as object, ARRAY_MT as LuaMetatable<object>) as unknown as T[];
}

const ESCAPES: { [c: string]: string } = { '"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t" };

function escapeChar(this: void, c: string): string {
  return ESCAPES[c] ?? string.format("\\u%04x", string.byte(c));
}

function encodeString(s: string): string {
  const [special] = string.find(s, '[%c"\\]');
  return special === undefined ? '"' + s + '"' : '"' + string.gsub(s, '[%c"\\]', escapeChar)[0] + '"';
}

/**
 * Encoded object keys: the same few hundred field names every second, so kept (bounded: emptied
 * when full). Values are not cached: addresses, peers and URIs change from one snapshot to the next.
 */
const KEY_CACHE_MAX = 1024;
let keyCache = new LuaTable<string, string>();
let keysCached = 0;

function encodeKey(k: string): string {
  const hit = keyCache.get(k);
  if (hit !== undefined) return hit;
  const e = encodeString(k);
  if (keysCached >= KEY_CACHE_MAX) {
    keyCache = new LuaTable();
    keysCached = 0;
  }
  keyCache.set(k, e);
  keysCached++;
  return e;
}

function encodeNumber(n: number): string {
  if (n !== n || n === math.huge || n === -math.huge) return "null";
  if (n === Math.floor(n) && n > -9007199254740992 && n < 9007199254740992) return string.format("%d", n);
  return string.format("%.14g", n);
}

/** the output pieces of the encode under way: OUT[1 .. outN] (one encode at a time: no yields inside) */
let OUT = new LuaTable<number, string>();
let outN = 0;

function put(x: string): void {
  outN++;
  OUT.set(outN, x);
}

function encodeInto(v: unknown, depth: number): void {
  const t = type(v);
  if (t === "string") put(encodeString(v as string));
  else if (t === "number") put(encodeNumber(v as number));
  else if (t === "boolean") put(v ? "true" : "false");
  else if (v === NULL) put("null");
  else if (t === "table") {
    if (depth > 32) error("json: nesting too deep");
    const tbl = v as { [k: string]: unknown };
    if (getmetatable(tbl) === ARRAY_MT || (tbl as unknown as unknown[])[0] !== undefined) {
      const a = tbl as unknown as unknown[];
      put("[");
      for (let i = 0; i < a.length; i++) {
        if (i > 0) put(",");
        encodeInto(a[i], depth + 1);
      }
      put("]");
    } else {
      put("{");
      let first = true;
      for (const [k, x] of pairs(tbl)) {
        const xt = type(x);
        if (xt === "function" || xt === "userdata" || xt === "thread") continue;
        if (!first) put(",");
        first = false;
        put(encodeKey(tostring(k)));
        put(":");
        encodeInto(x, depth + 1);
      }
      put("}");
    }
  } else put("null");
}

/**
 * Interpreted: an encode runs once per collection, never often enough for its traces to pay
 * back (a worker re-records them as snapshots change; docs/design-figures.md).
 */
noJit(encodeInto);
noJit(encodeString);
noJit(encodeKey);

export function encode(v: unknown): string | undefined {
  outN = 0;
  const [ok] = pcall(encodeInto, v, 0);
  const s = ok ? table.concat(OUT as unknown as string[], "", 1, outN) : undefined;
  // drop the pieces of a big encode (a deep scan's result) rather than keep them alive till the next
  if (outN > 8192) OUT = new LuaTable();
  return s;
}

export function decode(s: string): LuaMultiReturn<[any, string | undefined]> {
  return cjson.decode(s);
}

/**
 * Indent JSON text for humans (?pretty=1). Works on the text, so it keeps
 * [] vs {} and number formatting exactly as encoded.
 */
export function pretty(json: string): string {
  const out: string[] = [];
  let depth = 0;
  let i = 1;
  const n = json.length;
  while (i <= n) {
    // copy runs of plain characters in one go
    const [s, e] = string.find(json, '[{}%[%],:"]', i);
    if (s === undefined) {
      out.push(string.sub(json, i));
      break;
    }
    if (s > i) out.push(string.sub(json, i, s - 1));
    const c = string.sub(json, s, s);
    if (c === '"') {
      let j = s + 1;
      while (true) {
        const [q] = string.find(json, '["\\]', j);
        if (q === undefined) { j = n; break; }
        if (string.sub(json, q, q) === "\\") j = q + 2;
        else { j = q; break; }
      }
      out.push(string.sub(json, s, j));
      i = j + 1;
      continue;
    }
    if (c === "{" || c === "[") {
      const close = c === "{" ? "}" : "]";
      if (string.sub(json, s + 1, s + 1) === close) {
        out.push(c + close);
        i = s + 2;
        continue;
      }
      depth++;
      out.push(c, "\n", string.rep("  ", depth));
    } else if (c === "}" || c === "]") {
      depth--;
      out.push("\n", string.rep("  ", depth), c);
    } else if (c === ",") {
      out.push(",\n", string.rep("  ", depth));
    } else {
      out.push(": ");
    }
    i = (e as number) + 1;
  }
  return table.concat(out);
}
