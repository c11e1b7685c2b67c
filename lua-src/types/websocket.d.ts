/** lua-resty-websocket client: `resty.websocket.client` on OpenResty, `nginx.websocket.client` on Debian. */
interface WebSocketClient {
  connect(url: string, opts?: { protocols?: string | string[]; origin?: string; pool?: string; headers?: string[]; ssl_verify?: boolean }): LuaMultiReturn<[1 | undefined, string | undefined]>;
  send_text(data: string): LuaMultiReturn<[number | undefined, string | undefined]>;
  send_binary(data: string): LuaMultiReturn<[number | undefined, string | undefined]>;
  send_ping(data?: string): LuaMultiReturn<[number | undefined, string | undefined]>;
  send_pong(data?: string): LuaMultiReturn<[number | undefined, string | undefined]>;
  send_close(code?: number, msg?: string): LuaMultiReturn<[number | undefined, string | undefined]>;
  recv_frame(): LuaMultiReturn<[string | undefined, string | undefined, string | number | undefined]>;
  set_timeout(ms: number): void;
  /** one frame of a (possibly fragmented) message: opcode 0x1 text, 0x0 continuation */
  send_frame(fin: boolean, opcode: number, payload: string): LuaMultiReturn<[number | undefined, string | undefined]>;
  close(): LuaMultiReturn<[number | undefined, string | undefined]>;
  fatal: boolean;
  /** the underlying cosocket (settimeouts: connect, send, read in ms) */
  sock: { settimeouts(connect: number, send: number, read: number): void; settimeout(ms: number): void; close(): LuaMultiReturn<[1 | undefined, string | undefined]> };
}

/** `new` is called with a colon (`client:new(opts)`): with a dot the options would be taken for `self` and ignored. */
interface WebSocketClientModule {
  "new"(opts?: { timeout?: number; max_payload_len?: number; send_unmasked?: boolean }): LuaMultiReturn<[WebSocketClient | undefined, string | undefined]>;
}
