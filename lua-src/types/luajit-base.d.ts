/** LuaJIT base-library functions that lua-types (Lua 5.1 / JIT) leaves out. */

/** A zero-size userdata; with `true` it gets a fresh metatable (its __gc runs when it is collected). */
declare function newproxy(this: void, withMetatable: boolean): LuaUserdata;
