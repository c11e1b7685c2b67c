import * as cjson from "cjson.safe";

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
  return '"' + string.gsub(s, '[%c"\\]', escapeChar)[0] + '"';
}

function encodeNumber(n: number): string {
  if (n !== n || n === math.huge || n === -math.huge) return "null";
  if (n === Math.floor(n) && n > -9007199254740992 && n < 9007199254740992) return string.format("%d", n);
  return string.format("%.14g", n);
}

function encodeInto(buf: string[], v: unknown, depth: number): void {
  const t = type(v);
  if (t === "string") buf.push(encodeString(v as string));
  else if (t === "number") buf.push(encodeNumber(v as number));
  else if (t === "boolean") buf.push(v ? "true" : "false");
  else if (v === NULL) buf.push("null");
  else if (t === "table") {
    if (depth > 32) error("json: nesting too deep");
    const tbl = v as { [k: string]: unknown };
    if (getmetatable(tbl) === ARRAY_MT || (tbl as unknown as unknown[])[0] !== undefined) {
      const a = tbl as unknown as unknown[];
      buf.push("[");
      for (let i = 0; i < a.length; i++) {
        if (i > 0) buf.push(",");
        encodeInto(buf, a[i], depth + 1);
      }
      buf.push("]");
    } else {
      buf.push("{");
      let first = true;
      for (const [k, x] of pairs(tbl)) {
        const xt = type(x);
        if (xt === "function" || xt === "userdata" || xt === "thread") continue;
        if (!first) buf.push(",");
        first = false;
        buf.push(encodeString(tostring(k)), ":");
        encodeInto(buf, x, depth + 1);
      }
      buf.push("}");
    }
  } else buf.push("null");
}

export function encode(v: unknown): string | undefined {
  const buf: string[] = [];
  const [ok] = pcall(encodeInto, buf, v, 0);
  return ok ? table.concat(buf) : undefined;
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
