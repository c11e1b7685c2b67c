/**
 * Names the frames of the pool groups' creation paths (snapshot `created_at`) that the worker
 * could not: it labels frames with dladdr, which knows exported functions only, so a static
 * function reads "nginx+0x12627f". The sampler's call paths of the same worker carry each
 * object's full path and build id; with those the control plane's symbolizer reads the name
 * from the object's symbol table. Labels it cannot resolve stay as they are.
 */
import { Callpaths, CallpathFrame } from "../protocol";
import { Symbolizer } from "../elfsym";
import { UnrootedInfo } from "../summary";

const UNNAMED = /^(.+)\+(0x[0-9a-f]+)$/;

export function nameCreationPaths(snapshots: { unrooted: Record<string, UnrootedInfo> }[], callpaths: (Callpaths | undefined)[], sym: Symbolizer): void {
  const objects = new Map<string, CallpathFrame>();
  for (const cp of callpaths) for (const p of cp?.paths ?? []) for (const f of p.frames) if (f.module && f.path && !objects.has(f.module)) objects.set(f.module, f);
  if (!objects.size) return;
  const named = new Map<string, string>();
  const name = (label: string): string => {
    const m = UNNAMED.exec(label);
    const obj = m ? objects.get(m[1]) : undefined;
    if (!m || !obj) return label;
    if (!named.has(label)) {
      let r;
      try {
        r = sym.resolve({ module: obj.module, path: obj.path, build_id: obj.build_id, offset: m[2] });
      } catch {
        r = undefined;
      }
      named.set(label, r ? r.name : label);
    }
    return named.get(label)!;
  };
  for (const s of snapshots) {
    const out: Record<string, UnrootedInfo> = {};
    for (const sig in s.unrooted) {
      const u = s.unrooted[sig];
      out[sig] = u.created_at ? { ...u, created_at: u.created_at.map(name) } : u;
    }
    s.unrooted = out;
  }
}
