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
  close(): LuaMultiReturn<[number | undefined, string | undefined]>;
  fatal: boolean;
}

/** @noSelf */
interface WebSocketClientModule {
  new(this: void, opts?: { timeout?: number; max_payload_len?: number; send_unmasked?: boolean }): LuaMultiReturn<[WebSocketClient | undefined, string | undefined]>;
}
