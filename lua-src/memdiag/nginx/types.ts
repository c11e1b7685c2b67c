/**
 * A struct layout file (layouts/<nginx version>-<configure hash>.json), produced by
 * `npm run layouts` from an offsetof probe compiled against the nginx build's sources.
 * Field names use C member paths ("d.last", "shm.addr").
 */
export interface StructLayout {
  size: number;
  fields: { [field: string]: number };
}

export interface Layout {
  /** "<version>-<first 12 hex of md5(configure arguments)>" */
  id: string;
  nginx_version: string;
  configure_hash: string;
  structs: { [name: string]: StructLayout };
  /** compile-time constants of that build (NGX_CYCLE_POOL_SIZE, ...) */
  constants: { [name: string]: number };
}

/** Offset of a field; layouts are validated for completeness on load, so a miss is a bug. */
export function off(L: Layout, struct: string, field: string): number {
  const s = L.structs[struct];
  const v = s?.fields[field];
  if (v === undefined) error(`layout ${L.id}: no ${struct}.${field}`);
  return v as number;
}

export function sizeOf(L: Layout, struct: string): number {
  const s = L.structs[struct];
  if (s === undefined) error(`layout ${L.id}: no ${struct}`);
  return s.size;
}
