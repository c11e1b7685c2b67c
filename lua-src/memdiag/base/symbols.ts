import * as ffi from "ffi";
import { cdef } from "./cdef";
import { hex } from "../safe/mem";

cdef(`
  typedef struct { const char *dli_fname; void *dli_fbase; const char *dli_sname; void *dli_saddr; } memdiag_dl_info_t;
  typedef struct { uint32_t st_name; unsigned char st_info; unsigned char st_other; uint16_t st_shndx; uint64_t st_value; uint64_t st_size; } memdiag_elf64_sym_t;
  int dladdr1(const void *addr, memdiag_dl_info_t *info, void **extra_info, int flags);
`);

const C = ffi.C;
const dladdr1 = C.dladdr1;
const RTLD_DL_SYMENT = 1;
const info = ffi.new("memdiag_dl_info_t");
const extra = ffi.new("void *[1]");

export interface SymbolInfo {
  /** "ngx_http_lua_cleanup_vm", "ngx_http_x_module.so+0x1a2b0" or "0x7f..." when in no loaded object */
  name: string;
  /** basename of the object file, or "" */
  module: string;
  /** offset from the object's load base */
  offset: number;
  /** true when `name` is an exported symbol that really contains the address */
  exact: boolean;
}

const cache = new LuaTable<number, SymbolInfo>();
let cached = 0;

/**
 * For the main executable glibc's dladdr reports argv[0], which nginx overwrites with
 * its process title ("nginx: worker process"): name it after the file mapped at its
 * load base in /proc/self/maps instead (/proc/self/exe is unreadable after setuid).
 */
let exeName: string | undefined;
let exeBase = -1;
function objectName(fname: string, base: number): string {
  if (string.find(fname, "/", 1, true)[0] !== undefined) return basename(fname);
  if (base === exeBase && exeName !== undefined) return exeName;
  let name = fname;
  const [f] = io.open("/proc/self/maps", "r");
  if (f) {
    for (const [line] of f.lines()) {
      const [start, path] = string.match(line as string, "^(%x+)%-%x+ %S+ %S+ %S+ %S+%s+(/[^\n]*)$");
      if (start !== undefined && tonumber(start, 16) === base) {
        name = basename(path as string);
        exeName = name;
        exeBase = base;
        break;
      }
    }
    f.close();
  }
  return name;
}

function basename(p: string): string {
  const [b] = string.match(p, "([^/]+)$");
  return b ?? p;
}

/**
 * Names an address (function or data) the way a human reads it. An exported
 * symbol is used only when the address lies inside it (dladdr1 gives its size);
 * otherwise module + offset: the nearest exported name would be a lie for statics.
 */
export function symbolize(addr: number): SymbolInfo {
  const hit = cache.get(addr);
  if (hit !== undefined) return hit;
  let out: SymbolInfo;
  extra[0] = null;
  if (dladdr1(ffi.cast("const void *", addr), info, extra, RTLD_DL_SYMENT) === 0 || info.dli_fname === null) {
    out = { name: hex(addr), module: "", offset: 0, exact: false };
  } else {
    const base = tonumber(ffi.cast("uintptr_t", info.dli_fbase))!;
    const module = objectName(ffi.string(info.dli_fname), base);
    out = { name: `${module}+${hex(addr - base)}`, module, offset: addr - base, exact: false };
    if (info.dli_sname !== null && extra[0] !== null) {
      const sym = ffi.cast("const memdiag_elf64_sym_t *", extra[0]);
      const saddr = tonumber(ffi.cast("uintptr_t", info.dli_saddr))!;
      const size = tonumber(sym.st_size)!;
      if (addr === saddr || (addr > saddr && addr < saddr + size)) {
        const sname = ffi.string(info.dli_sname);
        out.name = addr === saddr ? sname : `${sname}+${hex(addr - saddr)}`;
        out.exact = true;
      }
    }
  }
  // handlers and roots are few; bound the cache anyway (addresses from garbage must not grow it forever)
  if (cached < 4096) {
    cache.set(addr, out);
    cached++;
  }
  return out;
}
