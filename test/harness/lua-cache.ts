/**
 * The Lua-land leak fixture: a module-level cache (package.loaded["app.cache"]) keyed by a table
 * made per request, so no entry is ever looked up or replaced. Leaking, it keeps every request's
 * entry; bounded, it keeps the last 50. Each entry's value is a 2,000-byte string and the
 * request id. Ground truth: /t/count (entries kept) and /t/payload (entries and the bytes of
 * their values, as JSON).
 */
export const LUA_CACHE_PATH = 'package.loaded["app.cache"].by_key';
export const LUA_CACHE_BOUND = 50;

export const luaCacheLocations = (bounded: boolean): string => `
    location = /t/req {
        content_by_lua_block {
            local c = package.loaded["app.cache"]
            if not c then c = { by_key = {}, order = {}, n = 0 } package.loaded["app.cache"] = c end
            local k = {}
            c.by_key[k] = string.rep("r", 2000) .. ngx.var.request_id
            c.n = c.n + 1
            ${bounded ? `c.order[#c.order + 1] = k
            if #c.order > ${LUA_CACHE_BOUND} then c.by_key[table.remove(c.order, 1)] = nil end` : ""}
            ngx.say(c.n)
        }
    }
    location = /t/count {
        content_by_lua_block {
            local c = package.loaded["app.cache"]
            local n = 0
            for _ in pairs(c and c.by_key or {}) do n = n + 1 end
            ngx.say(n)
        }
    }
    location = /t/payload {
        content_by_lua_block {
            local c = package.loaded["app.cache"]
            local n, bytes = 0, 0
            for _, v in pairs(c and c.by_key or {}) do n = n + 1 bytes = bytes + #v end
            ngx.say(string.format('{"keys":%d,"value_bytes":%d}', n, bytes))
        }
    }`;
