/** Declarations for the subset of lua-nginx-module's `ngx` API the agent uses. */

/** @noSelf */
declare namespace ngx {
  const ERR: number;
  const WARN: number;
  const NOTICE: number;
  const INFO: number;
  const DEBUG: number;
  const HTTP_OK: number;
  const HTTP_BAD_REQUEST: number;
  const HTTP_FORBIDDEN: number;
  const HTTP_NOT_FOUND: number;
  const HTTP_TOO_MANY_REQUESTS: number;
  const HTTP_INTERNAL_SERVER_ERROR: number;
  const HTTP_SERVICE_UNAVAILABLE: number;
  const OK: number;

  let status: number;
  const header: { [name: string]: string | number | undefined };
  const ctx: { [key: string]: unknown };

  function log(level: number, ...args: unknown[]): void;
  function say(...args: unknown[]): LuaMultiReturn<[1 | undefined, string | undefined]>;
  function print(...args: unknown[]): LuaMultiReturn<[1 | undefined, string | undefined]>;
  function exit(status: number): never;
  function now(): number;
  function time(): number;
  function update_time(): void;
  function sleep(seconds: number): void;
  function md5(s: string): string;
  function crc32_short(s: string): number;
  function get_phase(): string;
  function localtime(): string;

  type TimerCallback = (this: void, premature: boolean, ...args: any[]) => void;

  /** @noSelf */
  namespace timer {
    function at(delay: number, cb: TimerCallback, ...args: any[]): LuaMultiReturn<[true | undefined, string | undefined]>;
    function every(delay: number, cb: TimerCallback, ...args: any[]): LuaMultiReturn<[true | undefined, string | undefined]>;
    function running_count(): number;
    function pending_count(): number;
  }

  /** @noSelf */
  namespace worker {
    function pid(): number;
    function id(): number | undefined;
    function count(): number;
    function exiting(): boolean;
  }

  /** @noSelf */
  namespace config {
    const nginx_version: number;
    const ngx_lua_version: number;
    const subsystem: string;
    const debug: boolean;
    function nginx_configure(): string;
    function prefix(): string;
  }

  /** @noSelf */
  namespace req {
    function get_uri_args(max?: number): LuaMultiReturn<[{ [key: string]: string | boolean | (string | boolean)[] }, string | undefined]>;
    function get_method(): string;
  }

  /** @noSelf */
  namespace thread {
    function spawn(fn: (this: void, ...args: any[]) => any, ...args: any[]): unknown;
    function wait(...threads: unknown[]): LuaMultiReturn<[boolean, ...any[]]>;
    function kill(thread: unknown): LuaMultiReturn<[true | undefined, string | undefined]>;
  }


  interface SharedDict {
    get(key: string): LuaMultiReturn<[any, number | undefined]>;
    set(key: string, value: string | number | boolean | undefined, exptime?: number, flags?: number): LuaMultiReturn<[boolean, string | undefined, boolean]>;
    safe_set(key: string, value: string | number | boolean, exptime?: number, flags?: number): LuaMultiReturn<[boolean, string | undefined]>;
    add(key: string, value: string | number | boolean, exptime?: number, flags?: number): LuaMultiReturn<[boolean, string | undefined]>;
    incr(key: string, value: number, init?: number, init_ttl?: number): LuaMultiReturn<[number | undefined, string | undefined]>;
    delete(key: string): void;
    get_keys(max?: number): string[];
    capacity(): number;
    free_space(): number;
    flush_all(): void;
    flush_expired(max?: number): number;
  }
  const shared: { [name: string]: SharedDict | undefined };
}

/** `ngx.var` / `ngx.null` are reserved words in a namespace declaration; reach them through this view. */
interface NgxReservedFields {
  var: { [name: string]: string | undefined };
  null: unknown;
}
