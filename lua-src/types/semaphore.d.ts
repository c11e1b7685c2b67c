/** ngx.semaphore from lua-resty-core (light-thread wake-ups within one worker). */
interface NgxSemaphore {
  post(n?: number): void;
  wait(timeout: number): LuaMultiReturn<[true | undefined, string | undefined]>;
  count(): number;
}

/** @noResolution */
declare module "ngx.semaphore" {
  function _new(this: void, n?: number): LuaMultiReturn<[NgxSemaphore | undefined, string | undefined]>;
  export { _new as new };
}
