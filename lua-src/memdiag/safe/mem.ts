import * as ffi from "ffi";
import { Maps } from "./maps";

/**
 * Raw reads at numeric addresses. Addresses stay plain Lua numbers (user space
 * is below 2^47, exact in a double) and memory is read through one base pointer
 * indexed by address, so the hot loops allocate no cdata.
 * Callers check addresses against Maps first; these functions do not.
 */
const u8 = ffi.cast("const uint8_t *", 0);
const u32 = ffi.cast("const uint32_t *", 0);
const i32 = ffi.cast("const int32_t *", 0);
const TWO32 = 4294967296;

/** unsigned 64-bit word at an 8-aligned address, as a number (exact below 2^53) */
export function rdU64(addr: number): number {
  const w = addr / 4;
  return u32[w] + u32[w + 1] * TWO32;
}

export function rdU32(addr: number): number {
  return u32[addr / 4];
}

export function rdI32(addr: number): number {
  return i32[addr / 4];
}

export function rdU8(addr: number): number {
  return u8[addr];
}

/** A pointer-sized field at an 8-aligned address. */
export const rdPtr = rdU64;

/** Read an ngx_str_t {len, data} at addr, if both it and its bytes are readable (bounded). */
export function rdNgxStr(maps: Maps, addr: number, maxLen: number): string | undefined {
  if (!maps.readable(addr, 16)) return undefined;
  const len = rdU64(addr);
  const data = rdU64(addr + 8);
  if (len === 0) return "";
  if (len > maxLen || !maps.readable(data, len)) return undefined;
  return ffi.string(ffi.cast("const char *", data), len);
}

/** Read a NUL-terminated C string of at most maxLen bytes. */
export function rdCStr(maps: Maps, addr: number, maxLen: number): string | undefined {
  const end = maps.readableEnd(addr);
  if (end === 0) return undefined;
  const limit = Math.min(maxLen, end - addr);
  for (let i = 0; i < limit; i++) {
    if (u8[addr + i] === 0) return ffi.string(ffi.cast("const char *", addr), i);
  }
  return undefined;
}

export function hex(addr: number): string {
  return string.format("0x%x", addr);
}

/** Numeric address of a cdata pointer. */
export function addrOf(p: unknown): number {
  return tonumber(ffi.cast("uintptr_t", p))!;
}
