import { luaStr, runLua } from "../harness/lua";

/** base/json.ts (compiled Lua): our own encoder (Debian lua-cjson 2.1.0 has no array_mt) and pretty(). */
const enc = (lua: string): string => runLua<{ s: string }>(`return { s = J(${lua}) }`).s;

describe("json encode", () => {
  test("arr(): an empty array is [], an empty table without arr() is {}", () => {
    expect(enc("arr({})")).toBe("[]");
    expect(enc("{}")).toBe("{}");
    expect(enc("arr({1, 2, 3})")).toBe("[1,2,3]");
    expect(enc("{1, 2}")).toBe("[1,2]"); // a table with [1] is an array even without arr()
  });

  test("NULL encodes null and keeps the key; nil drops it", () => {
    expect(JSON.parse(enc("{ a = NULL, b = nil, c = 1 }"))).toEqual({ a: null, c: 1 });
    expect(enc("arr({ NULL })")).toBe("[null]");
  });

  test("escaping: quotes, backslash, control characters; UTF-8 passes through; result parses back", () => {
    const s = enc(`"q\\"b\\\\n\\nr\\rt\\tz\\0x\\1f\\127é"`);
    expect(s).toBe('"q\\"b\\\\n\\nr\\rt\\tz\\u0000x\\u0001f\\u007fé"');
    expect(JSON.parse(s)).toBe('q"b\\n\nr\rt\tz\u0000x\u0001f\u007fé');
    const keys = JSON.parse(enc(`{ ["a\\"b"] = 1 }`));
    expect(keys).toEqual({ 'a"b': 1 });
  });

  test("integers are exact up to 2^53 (no exponent), floats keep 14 digits, NaN/inf become null", () => {
    expect(enc("123456789012345")).toBe("123456789012345");
    expect(enc("2^53 - 1")).toBe("9007199254740991");
    expect(enc("-42")).toBe("-42");
    expect(enc("0")).toBe("0");
    expect(enc("0.5")).toBe("0.5");
    expect(enc("1/3")).toBe("0.33333333333333");
    expect(enc("1e300")).toBe("1e+300");
    expect(enc("0/0")).toBe("null");
    expect(enc("math.huge")).toBe("null");
    expect(enc("-math.huge")).toBe("null");
    expect(JSON.parse(enc("{ x = 1.5e-7 }")).x).toBeCloseTo(1.5e-7, 20);
  });

  test("functions and userdata are skipped in objects; too deep nesting fails cleanly (nil)", () => {
    expect(JSON.parse(enc("{ f = print, ok = true }"))).toEqual({ ok: true });
    const r = runLua(`local t = {} local cur = t for i = 1, 40 do cur.x = {} cur = cur.x end return { deep = J(t) == nil }`);
    expect(r.deep).toBe(true);
  });
  test("encodes stay independent: a failed encode leaves nothing behind, the key cache gives the same text past its bound", () => {
    const r = runLua<{ a: string; bad: boolean; b: string; c: string; many: boolean }>(`
      local t = {} local cur = t for i = 1, 40 do cur.x = {} cur = cur.x end
      local a = J({ k = "v\\"w", n = 1 })
      local bad = J(t) == nil
      local b = J({ k = "v\\"w", n = 1 })
      local big = {} for i = 1, 5000 do big["s" .. i .. "\\n"] = i end
      local many = J(big) ~= nil
      local c = J({ k = "v\\"w", ["s1\\n"] = 1 })
      return { a = a, bad = bad, b = b, c = c, many = many }`);
    expect(r.bad).toBe(true);
    expect(r.b).toBe(r.a);
    expect(JSON.parse(r.a)).toEqual({ k: 'v"w', n: 1 });
    expect(r.many).toBe(true);
    expect(JSON.parse(r.c)).toEqual({ k: 'v"w', "s1\n": 1 });
  });
});

describe("json pretty", () => {
  const pretty = (json: string): string => runLua<{ s: string }>(`return { s = require("memdiag.base.json").pretty(${luaStr(json)}) }`).s;

  test("indents by two, keeps [] and {} (also nested), equal after parsing", () => {
    const src = '{"a":[],"b":{},"c":[1,{"d":[]}],"e":"x"}';
    const out = pretty(src);
    expect(JSON.parse(out)).toEqual(JSON.parse(src));
    expect(out).toContain('"a": []');
    expect(out).toContain('"b": {}');
    expect(out).toContain('"d": []');
    expect(out.split("\n")[1]).toBe('  "a": [],');
  });

  test("brackets, commas, colons and escaped quotes inside strings are left alone", () => {
    const src = '{"k":"a,b:[c]{d}\\"e\\\\","n":1}';
    const out = pretty(src);
    expect(JSON.parse(out)).toEqual(JSON.parse(src));
    expect(out).toContain('"k": "a,b:[c]{d}\\"e\\\\"');
  });

  test("numbers keep their encoded form", () => {
    const src = '{"x":9007199254740991,"y":0.33333333333333,"z":1e+300}';
    expect(pretty(src).replace(/\s/g, "")).toBe(src);
  });
});
