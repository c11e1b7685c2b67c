/** LuaJIT's bit library (32-bit integer operations; results are signed 32-bit numbers). */
/** @noResolution */
declare module "bit" {
  /** @noSelf */
  export function bxor(a: number, b: number): number;
  /** @noSelf */
  export function rol(a: number, n: number): number;
  /** @noSelf */
  export function lshift(a: number, n: number): number;
  /** @noSelf */
  export function tobit(a: number): number;
}
