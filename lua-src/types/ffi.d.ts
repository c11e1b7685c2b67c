/**
 * LuaJIT FFI. In LuaJIT `ffi` is a module, not a global (lua-types declares a
 * global): import it with `import * as ffi from "ffi"`.
 */
/** @noResolution */
declare module "ffi" {
  /** An opaque cdata value (pointer, struct, boxed 64-bit number). */
  export type CData = any;
  export type CType = any;

  export function cdef(this: void, decl: string): void;
  export const C: any;
  export function load(this: void, name: string, global?: boolean): any;
  function _new(this: void, ct: CType | string, ...init: any[]): CData;
  export { _new as new };
  function _typeof(this: void, ct: string, ...args: any[]): CType;
  export { _typeof as typeof };
  export function cast(this: void, ct: CType | string, init: any): CData;
  export function sizeof(this: void, ct: CType | string, nelem?: number): number | undefined;
  export function offsetof(this: void, ct: CType | string, field: string): number | undefined;
  export function istype(this: void, ct: CType | string, obj: any): boolean;
  export function string(this: void, ptr: CData, len?: number): string;
  export function copy(this: void, dst: CData, src: CData | string, len?: number): void;
  export function fill(this: void, dst: CData, len: number, c?: number): void;
  export function errno(this: void, newerr?: number): number;
  export function gc(this: void, cdata: CData, finalizer: ((this: void, cd: CData) => void) | undefined): CData;
  export function metatype(this: void, ct: CType | string, mt: object): CType;
  export function abi(this: void, param: string): boolean;
  export const os: string;
  export const arch: string;
}
