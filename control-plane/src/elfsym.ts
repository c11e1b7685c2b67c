/**
 * Symbolisation of sampler frames (module + offset + build-id) on the control
 * plane side, from the ELF symbol tables of the objects themselves: `.symtab`
 * when the file is not stripped (static functions included), else `.dynsym`,
 * and from a separate debug file found by build-id
 * (/usr/lib/debug/.build-id/xx/yyyy.debug) when one is installed. A file whose
 * build-id differs from the frame's is not used (a different build would name
 * the wrong function). Unresolvable frames stay module + offset.
 *
 * file:line comes from the DWARF line tables through binutils' addr2line when it
 * is installed and the chosen file has them (a debug file, or an object built
 * with -g and not stripped).
 *
 * Offsets are relative to the object's load base, which for shared objects and
 * PIE executables is the ELF virtual address (and for non-PIE executables the
 * base is 0), so they compare directly with st_value.
 */
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as path from "path";

export interface ElfSymbol {
  start: number;
  size: number;
  name: string;
}

export interface ElfInfo {
  file: string;
  buildId?: string;
  /** "symtab" (full) or "dynsym" (exported only) */
  table: "symtab" | "dynsym" | "none";
  /** function symbols sorted by start */
  syms: ElfSymbol[];
  /** has DWARF line tables (.debug_line with contents) */
  hasLines: boolean;
}

const SHT_SYMTAB = 2;
const SHT_NOTE = 7;
const SHT_DYNSYM = 11;
const STT_FUNC = 2;
const STT_GNU_IFUNC = 10;
const NT_GNU_BUILD_ID = 3;

function cstr(buf: Buffer, off: number): string {
  let end = off;
  while (end < buf.length && buf[end] !== 0) end++;
  return buf.toString("latin1", off, end);
}

/** Reads the function symbols and the build-id of an ELF64 little-endian file. Throws on anything else. */
export function readElf(file: string): ElfInfo {
  const buf = fs.readFileSync(file);
  if (buf.length < 64 || buf.readUInt32BE(0) !== 0x7f454c46) throw new Error(`${file}: not an ELF file`);
  if (buf[4] !== 2 || buf[5] !== 1) throw new Error(`${file}: only ELF64 little-endian is supported`);
  const shoff = Number(buf.readBigUInt64LE(0x28));
  const shentsize = buf.readUInt16LE(0x3a);
  const shnum = buf.readUInt16LE(0x3c);
  if (shoff === 0 || shnum === 0 || shoff + shnum * shentsize > buf.length) throw new Error(`${file}: no section headers`);
  const shstrndx = buf.readUInt16LE(0x3e);
  const sec = (i: number) => {
    const o = shoff + i * shentsize;
    return {
      name: buf.readUInt32LE(o),
      type: buf.readUInt32LE(o + 4),
      offset: Number(buf.readBigUInt64LE(o + 24)),
      size: Number(buf.readBigUInt64LE(o + 32)),
      link: buf.readUInt32LE(o + 40),
      entsize: Number(buf.readBigUInt64LE(o + 56)),
    };
  };
  let buildId: string | undefined;
  let hasLines = false;
  const names = shstrndx < shnum ? sec(shstrndx) : undefined;
  const SHT_NOBITS = 8;
  let symtab = -1;
  let dynsym = -1;
  for (let i = 0; i < shnum; i++) {
    const s = sec(i);
    if (names && names.offset + s.name < buf.length && s.type !== SHT_NOBITS && s.size > 0 && cstr(buf, names.offset + s.name) === ".debug_line") hasLines = true;
    if (s.type === SHT_SYMTAB) symtab = i;
    else if (s.type === SHT_DYNSYM) dynsym = i;
    else if (s.type === SHT_NOTE && buildId === undefined && s.offset + s.size <= buf.length) {
      let p = s.offset;
      const end = s.offset + s.size;
      while (p + 12 <= end) {
        const namesz = buf.readUInt32LE(p);
        const descsz = buf.readUInt32LE(p + 4);
        const type = buf.readUInt32LE(p + 8);
        const name = p + 12;
        const desc = name + ((namesz + 3) & ~3);
        const next = desc + ((descsz + 3) & ~3);
        if (next > end) break;
        if (type === NT_GNU_BUILD_ID && namesz === 4 && buf.toString("latin1", name, name + 3) === "GNU") {
          buildId = buf.toString("hex", desc, desc + descsz);
          break;
        }
        p = next;
      }
    }
  }
  const use = symtab >= 0 ? symtab : dynsym;
  const syms: ElfSymbol[] = [];
  if (use >= 0) {
    const s = sec(use);
    const str = sec(s.link);
    const ent = s.entsize || 24;
    // a debug file's symtab is real; NOBITS sections would have offset/size beyond the file: skip those
    if (s.offset + s.size <= buf.length && str.offset + str.size <= buf.length) {
      for (let o = s.offset; o + ent <= s.offset + s.size; o += ent) {
        const info = buf[o + 4];
        const kind = info & 0xf;
        const shndx = buf.readUInt16LE(o + 6);
        const value = Number(buf.readBigUInt64LE(o + 8));
        const size = Number(buf.readBigUInt64LE(o + 16));
        if ((kind !== STT_FUNC && kind !== STT_GNU_IFUNC) || shndx === 0 || value === 0) continue;
        const nameOff = buf.readUInt32LE(o);
        if (nameOff >= str.size) continue;
        syms.push({ start: value, size, name: cstr(buf, str.offset + nameOff) });
      }
    }
  }
  syms.sort((a, b) => a.start - b.start || b.size - a.size);
  return { file, buildId, table: symtab >= 0 ? "symtab" : dynsym >= 0 ? "dynsym" : "none", syms, hasLines };
}

/** The function containing `offset` (within its st_size), as "name+0xoff", or undefined. */
export function lookupSymbol(info: ElfInfo, offset: number): { name: string; symbol: string; delta: number } | undefined {
  const s = info.syms;
  let lo = 0;
  let hi = s.length - 1;
  let best = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (s[mid].start <= offset) {
      best = mid;
      lo = mid + 1;
    } else hi = mid - 1;
  }
  // several symbols may start at the same address (aliases): any containing one will do
  for (let i = best; i >= 0 && i > best - 8; i--) {
    const x = s[i];
    if (offset >= x.start && offset < x.start + Math.max(x.size, 1)) {
      const delta = offset - x.start;
      return { name: delta === 0 ? x.name : `${x.name}+0x${delta.toString(16)}`, symbol: x.name, delta };
    }
  }
  return undefined;
}

export interface FrameIn {
  module: string | null;
  offset: string | null;
  build_id: string | null;
  /** full path of the object on the worker's host, when the agent sent it */
  path?: string | null;
  name?: string | null;
}

export interface Resolved {
  name: string;
  /** where the name came from: the worker (dladdr, exported), the object's symtab/dynsym, or a debug file */
  source: "worker" | "symtab" | "dynsym" | "debug";
}

/**
 * Resolves frames with the files available to the control plane. Caches one
 * ElfInfo per file; `debugRoots` are searched for <root>/.build-id/xx/yyyy.debug.
 */
export class Symbolizer {
  private cache = new Map<string, ElfInfo | null>();
  constructor(private readonly debugRoots: string[] = ["/usr/lib/debug"], private readonly searchDirs: string[] = []) {}

  private load(file: string): ElfInfo | null {
    if (this.cache.has(file)) return this.cache.get(file)!;
    let info: ElfInfo | null = null;
    try {
      if (fs.existsSync(file)) info = readElf(file);
    } catch {
      info = null;
    }
    if (this.cache.size < 4096) this.cache.set(file, info);
    return info;
  }

  /** Candidate ELF files for a frame, best first, all with a matching build-id. */
  private candidates(f: FrameIn): ElfInfo[] {
    const out: ElfInfo[] = [];
    const id = f.build_id ?? undefined;
    if (id && id.length > 2) {
      for (const root of this.debugRoots) {
        const dbg = this.load(path.join(root, ".build-id", id.slice(0, 2), `${id.slice(2)}.debug`));
        if (dbg && dbg.buildId === id) out.push(dbg);
      }
    }
    const files: string[] = [];
    if (f.path) files.push(f.path);
    if (f.module) for (const d of this.searchDirs) files.push(path.join(d, f.module));
    for (const file of files) {
      const info = this.load(file);
      if (info && (!id || info.buildId === id)) out.push(info);
    }
    return out;
  }

  resolve(f: FrameIn): Resolved | undefined {
    if (f.name) return { name: f.name, source: "worker" };
    if (!f.offset) return undefined;
    const offset = parseInt(f.offset, 16);
    for (const info of this.candidates(f)) {
      const hit = lookupSymbol(info, offset);
      if (hit) return { name: hit.name, source: info.file.endsWith(".debug") ? "debug" : info.table === "symtab" ? "symtab" : "dynsym" };
    }
    return undefined;
  }

  /**
   * "file.c:123" for each frame (undefined where unknown), one addr2line run per
   * file. Needs binutils' addr2line; without it every entry is undefined.
   */
  fileLines(frames: FrameIn[]): (string | undefined)[] {
    const out: (string | undefined)[] = frames.map(() => undefined);
    const byFile = new Map<string, { idx: number; off: string }[]>();
    frames.forEach((f, idx) => {
      if (!f.offset) return;
      const c = this.candidates(f).find((x) => x.hasLines);
      if (!c) return;
      const list = byFile.get(c.file) ?? [];
      list.push({ idx, off: f.offset });
      byFile.set(c.file, list);
    });
    for (const [file, list] of byFile) {
      let text = "";
      try {
        text = execFileSync("addr2line", ["-e", file, ...list.map((x) => x.off)], { encoding: "utf8", timeout: 10000 });
      } catch {
        continue;
      }
      const lines = text.split("\n");
      list.forEach((x, k) => {
        const l = lines[k];
        const m = l ? /^(.*):(\d+)(?: \(discriminator \d+\))?$/.exec(l.trim()) : null;
        if (m && m[1] !== "??" && m[2] !== "0") out[x.idx] = `${path.basename(m[1])}:${m[2]}`;
      });
    }
    return out;
  }

  /** The frame's label: a resolved name, else module+offset (as the worker sent it). */
  label(f: FrameIn): string {
    const r = this.resolve(f);
    if (r) return r.name;
    return f.module && f.offset ? `${f.module}+${f.offset}` : (f.offset ?? "?");
  }
}
